"""Array type aliases used across pkmix (shapes written as jaxtyping strings)."""

from jaxtyping import Array, Bool, Float, Int

# One subject's records: shape [rec]; a batch of subjects: [subj, rec].
SubjectFloat = Float[Array, "rec"]
SubjectInt = Int[Array, "rec"]
SubjectBool = Bool[Array, "rec"]
BatchFloat = Float[Array, "subj rec"]
BatchInt = Int[Array, "subj rec"]
BatchBool = Bool[Array, "subj rec"]
Covariates = Float[Array, "subj rec cov"]
State = Float[Array, "cmt"]
EtaVector = Float[Array, "eta"]
EtaMatrix = Float[Array, "eta eta"]

__all__ = [
    "Array", "Bool", "Float", "Int", "SubjectFloat", "SubjectInt", "SubjectBool",
    "BatchFloat", "BatchInt", "BatchBool", "Covariates", "State", "EtaVector", "EtaMatrix",
]

"""pkmix: population pharmacokinetics (NLME) on JAX.

Importing pkmix turns on 64-bit floats and JAX's persistent compilation cache.
"""

from importlib.metadata import PackageNotFoundError, version

from ._config import enable_compilation_cache, enable_x64

enable_x64()
enable_compilation_cache()

from ._data import Dataset as Dataset  # noqa: E402
from ._data import DatasetError as DatasetError  # noqa: E402
from ._data import DatasetWarning as DatasetWarning  # noqa: E402
from ._data import SubjectBatch as SubjectBatch  # noqa: E402
from ._data import read_nonmem as read_nonmem  # noqa: E402
from ._model.error_models import additive as additive  # noqa: E402
from ._model.error_models import combined as combined  # noqa: E402
from ._model.error_models import eps_error as eps_error  # noqa: E402
from ._model.error_models import log_additive as log_additive  # noqa: E402
from ._model.error_models import proportional as proportional  # noqa: E402
from ._model.likelihoods import AbstractLikelihood as AbstractLikelihood  # noqa: E402
from ._model.likelihoods import bernoulli as bernoulli  # noqa: E402
from ._model.likelihoods import binomial as binomial  # noqa: E402
from ._model.likelihoods import endpoints as endpoints  # noqa: E402
from ._model.likelihoods import loglik as loglik  # noqa: E402
from ._model.likelihoods import negative_binomial as negative_binomial  # noqa: E402
from ._model.likelihoods import ordinal as ordinal  # noqa: E402
from ._model.likelihoods import poisson as poisson  # noqa: E402
from ._model.tte import time_to_event as time_to_event  # noqa: E402
from ._model.errors import ModelError as ModelError  # noqa: E402
from ._model.model import Model as Model  # noqa: E402
from ._model.parameters import IOV as IOV  # noqa: E402
from ._model.parameters import SD as SD  # noqa: E402
from ._model.parameters import Block as Block  # noqa: E402
from ._model.parameters import Eta as Eta  # noqa: E402
from ._model.parameters import ParameterValues as ParameterValues  # noqa: E402
from ._model.parameters import Sigma as Sigma  # noqa: E402
from ._model.parameters import Theta as Theta  # noqa: E402
from ._model.parameters import Variance as Variance  # noqa: E402
from ._pk.closed_form import one_compartment as one_compartment  # noqa: E402
from ._pk.closed_form import three_compartment as three_compartment  # noqa: E402
from ._pk.closed_form import two_compartment as two_compartment  # noqa: E402
from ._pk.ode import ODE as ODE  # noqa: E402
from ._predict import predict as predict  # noqa: E402

try:
    __version__ = version("pkmix")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from ._estimation.fit import evaluate as evaluate  # noqa: E402
from ._estimation.methods import AGQ as AGQ  # noqa: E402
from ._estimation.methods import IMP as IMP  # noqa: E402
from ._estimation.methods import SAEM as SAEM  # noqa: E402
from ._estimation.fit import fit as fit  # noqa: E402
from ._results import FitResult as FitResult  # noqa: E402

# Imported when first used (PEP 562): a fit does not need simulation, batch fits,
# workflows, reports or plots, and a new process starts faster without them.
_LAZY = {
    "plots": (".plots", None),
    "report": (".report", None),
    "batch": (".batch", None),
    "workflows": (".workflows", None),
    "to_inference_data": ("._arviz", "to_inference_data"),
    "load_run": (".report", "load_run"),
    "write_report": (".report", "write_report"),
    "fit_batch": (".batch", "fit_batch"),
    "simulate": ("._simulate", "simulate"),
    "vpc": ("._simulate", "vpc"),
    "vpc_proportions": ("._simulate", "vpc_proportions"),
    "km_vpc": ("._simulate", "km_vpc"),
    "ProportionVPCResult": ("._simulate", "ProportionVPCResult"),
    "KMVPCResult": ("._simulate", "KMVPCResult"),
    "TrialDesign": ("._simulate", "TrialDesign"),
    "Arm": ("._simulate", "Arm"),
    "Dose": ("._simulate", "Dose"),
    "VPCResult": ("._simulate", "VPCResult"),
    "BatchFitResult": (".batch", "BatchFitResult"),
    "likelihood_ratio_test": (".batch", "likelihood_ratio_test"),
    "bootstrap": (".workflows", "bootstrap"),
    "sir": (".workflows", "sir"),
    "sse": (".workflows", "sse"),
    "Normal": ("._simulate", "Normal"),
    "LogNormal": ("._simulate", "LogNormal"),
    "Uniform": ("._simulate", "Uniform"),
    "Categorical": ("._simulate", "Categorical"),
}


def __getattr__(name):
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'pkmix' has no attribute {name!r}") from None
    import importlib

    value = importlib.import_module(module_name, __name__)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

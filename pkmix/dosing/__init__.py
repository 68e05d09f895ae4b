"""Bayesian dosing: MAP individualisation, posterior, regimen optimisation.

    import pkmix.dosing as dosing
    patient = dosing.load_patient("examples/vancomycin_tdm/patient.json")
    fit = dosing.map_estimate("vancomycin_goti2018", patient)        # individual estimates
    idata = dosing.sample_posterior("vancomycin_goti2018", fit)      # arviz.InferenceData (NUTS)
    rec = dosing.recommend("vancomycin_goti2018", fit, "auc24=400:600")
    print(rec.summary())
"""

from .map import MAPResult as MAPResult
from .map import map_estimate as map_estimate
from .patient import BoundPatient as BoundPatient
from .patient import Dose as Dose
from .patient import Level as Level
from .patient import Patient as Patient
from .patient import PatientError as PatientError
from .patient import PatientWarning as PatientWarning
from .patient import load_patient as load_patient
from .patient import patient_from_dict as patient_from_dict
from .posterior import sample_posterior as sample_posterior
from .posterior import summary as posterior_summary
from .regimen import Recommendation as Recommendation
from .regimen import Regimen as Regimen
from .regimen import Target as Target
from .regimen import recommend as recommend
from .regimen import steady_state_exposure as steady_state_exposure
from .regimen import time_below as time_below

__all__ = [
    "map_estimate", "MAPResult", "sample_posterior", "posterior_summary", "recommend", "Recommendation",
    "Regimen", "Target", "Patient", "Dose", "Level", "BoundPatient", "PatientError", "PatientWarning",
    "load_patient", "patient_from_dict", "steady_state_exposure", "time_below",
]

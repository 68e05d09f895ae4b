"""Bayesian dosing: MAP individualisation, posterior, regimen optimisation.

    import pkmix.dosing as dosing
    patient = dosing.load_patient("examples/vancomycin_tdm/patient.json")
    fit = dosing.map_estimate("vancomycin_goti2018", patient)        # individual estimates
    idata = dosing.sample_posterior("vancomycin_goti2018", fit)      # arviz.InferenceData (NUTS)
    rec = dosing.recommend("vancomycin_goti2018", fit, "auc24=400:600")
    print(rec.summary())

The everyday questions: `next_dose` (the dose at a chosen time), `history_exposure` (AUC
over any window, levels, each dose's peak and trough, with credible intervals),
`interval_for` (the interval for a given dose), `what_if` (any regimen, at the MAP, given
etas or a priori), continuous infusion (``recommend(..., continuous=True)``). Hard
maximum doses are `DoseLimits`; `pkmix.dosing.service` answers each question as the JSON
of ``pkmix dose`` and the web API, and keeps the audit trail.
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
from .questions import history_exposure as history_exposure
from .questions import interval_for as interval_for
from .questions import next_dose as next_dose
from .questions import what_if as what_if
from .safety import DoseLimits as DoseLimits
from .averaging import AveragedRecommendation as AveragedRecommendation
from .averaging import AveragingError as AveragingError
from .averaging import average as average
from .averaging import model_weights as model_weights

__all__ = [
    "map_estimate", "MAPResult", "sample_posterior", "posterior_summary", "recommend", "Recommendation",
    "Regimen", "Target", "Patient", "Dose", "Level", "BoundPatient", "PatientError", "PatientWarning",
    "load_patient", "patient_from_dict", "steady_state_exposure", "time_below", "next_dose", "history_exposure",
    "interval_for", "what_if", "DoseLimits", "average", "AveragedRecommendation", "AveragingError",
    "model_weights",
]

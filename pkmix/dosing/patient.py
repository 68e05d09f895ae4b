"""One patient's record for dosing: reading, validation, units, and the padded arrays.

A `Patient` is what the pharmacist typed (covariates with units, the dose history, the
measured levels), independent of any model. `bind` turns it into the records of one
NONMEM subject *in the model's units*: doses and levels converted, covariates converted
and checked against the model's validated ranges, time-varying covariates as EVID 2
records, then sorted. `BoundPatient.subject` pads those records into a `SubjectBatch`
of a bucketed length, so a second patient of similar size reuses the compiled program.

Every fault is a `PatientError` naming the field at fault (``levels[1].value``,
``covariates.WT``): nothing bad reaches JAX. A covariate outside the range the model
was developed on is a `PatientWarning` (also listed in ``BoundPatient.warnings`` so
the command line can print it). The JSON format is documented in docs/patient_format.md.

The code is in three modules by concept: `units` (conversion tables, limits, errors),
`input` (reading JSON and CSV into a `Patient`) and `binding` (a `Patient` in one
model's units, padded for the compiled programs). This module keeps their public names
in one place.
"""

from .binding import (RECORD_BUCKET, BoundPatient, ModelInfo, _bind_frame, _bind_json, _covariate_value,
                      _dose_compartment, _find_module_of, _last_dose, _model_route, bind, merge_records,
                      model_info, to_subject)
from .input import (Covariate, Dose, Level, Patient, Reset, _check_history, _from_frame, _read_nonmem, load_patient,
                    patient_from_dict)
from .units import (_CONCENTRATION, _MASS, _MOLAR, _TIME, PatientError, PatientWarning, _norm_unit, convert,
                    convert_concentration)

__all__ = ["PatientError", "PatientWarning", "ModelInfo", "model_info", "Covariate", "Dose", "Level", "Patient",
           "Reset", "BoundPatient", "load_patient", "patient_from_dict", "bind", "merge_records", "to_subject", "convert",
           "RECORD_BUCKET"]

"""Data layer: read and validate NONMEM-format datasets, expand ADDL doses, and batch
subjects into padded JAX arrays (host side until `Dataset.batch`)."""

from .dataset import Dataset as Dataset
from .dataset import SubjectBatch as SubjectBatch
from .errors import DatasetError as DatasetError
from .errors import DatasetWarning as DatasetWarning
from .errors import Violation as Violation
from .reader import expand_additional_doses as expand_additional_doses
from .reader import read_nonmem as read_nonmem

__all__ = [
    "read_nonmem", "Dataset", "SubjectBatch", "DatasetError", "DatasetWarning",
    "Violation", "expand_additional_doses",
]

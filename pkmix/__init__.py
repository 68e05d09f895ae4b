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

from . import plots as plots  # noqa: E402  (matplotlib is imported only when a plot is made)
from ._arviz import to_inference_data as to_inference_data  # noqa: E402
from .report import load_run as load_run  # noqa: E402
from .report import write_report as write_report  # noqa: E402
from .batch import fit_batch as fit_batch  # noqa: E402
from ._simulate import simulate as simulate  # noqa: E402
from ._simulate import vpc as vpc  # noqa: E402
from ._simulate import vpc_proportions as vpc_proportions  # noqa: E402
from ._simulate import km_vpc as km_vpc  # noqa: E402
from ._simulate import ProportionVPCResult as ProportionVPCResult  # noqa: E402
from ._simulate import KMVPCResult as KMVPCResult  # noqa: E402
from ._simulate import TrialDesign as TrialDesign  # noqa: E402
from ._simulate import Arm as Arm  # noqa: E402
from ._simulate import Dose as Dose  # noqa: E402
from ._simulate import VPCResult as VPCResult  # noqa: E402
from .batch import BatchFitResult as BatchFitResult  # noqa: E402
from .batch import likelihood_ratio_test as likelihood_ratio_test  # noqa: E402
from .workflows import bootstrap as bootstrap  # noqa: E402
from .workflows import sir as sir  # noqa: E402
from .workflows import sse as sse  # noqa: E402
from ._simulate import Normal as Normal  # noqa: E402
from ._simulate import LogNormal as LogNormal  # noqa: E402
from ._simulate import Uniform as Uniform  # noqa: E402
from ._simulate import Categorical as Categorical  # noqa: E402

"""Replicate workflows on ``fit_batch``: the bootstrap, SIR, SSE and power, simulation
with parameter uncertainty, and the split of replicates over processes
(``jax.distributed``)."""

from ._common import bca_interval as bca_interval
from ._common import fit_replicates as fit_replicates
from ._common import gather_rows as gather_rows
from ._common import jackknife_acceleration as jackknife_acceleration
from ._common import percentile_interval as percentile_interval
from ._common import process_share as process_share
from .bootstrap import BootstrapResult as BootstrapResult
from .bootstrap import bootstrap as bootstrap
from .sir import SIRResult as SIRResult
from .sir import sir as sir
from .sse import SSEResult as SSEResult
from .sse import sse as sse
from .uncertainty import parameter_sets as parameter_sets
from .uncertainty import simulate_with_uncertainty as simulate_with_uncertainty

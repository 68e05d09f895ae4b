"""Diagnostic plots of a fit: goodness of fit, individual fits, eta diagnostics, VPC,
convergence (every parameter per iteration).

Every function returns a matplotlib ``Figure`` (``individual_fits`` a list, one per
page) that saves as PNG or SVG with ``fig.savefig(path)``. matplotlib is imported only
when a plot is made: ``pip install 'pkmix[plots]'``.

Example:
    >>> import pkmix, pkmix.plots as pp                             # doctest: +SKIP
    >>> result = pkmix.fit(model, "theo_sd.csv")                    # doctest: +SKIP
    >>> pp.gof_panel(result).savefig("gof.png", dpi=120)            # doctest: +SKIP
    >>> for k, fig in enumerate(pp.individual_fits(result)):        # doctest: +SKIP
    ...     fig.savefig(f"individual_{k + 1}.svg")
    >>> pp.vpc_plot(pp.vpc_from_result(result)).savefig("vpc.png")  # doctest: +SKIP
"""

from ._common import smooth as smooth
from .convergence import convergence_plot as convergence_plot
from .eta import eta_histograms as eta_histograms
from .eta import eta_vs_covariates as eta_vs_covariates
from .eta import subject_covariates as subject_covariates
from .gof import abs_iwres_vs_ipred as abs_iwres_vs_ipred
from .gof import cwres_vs_pred as cwres_vs_pred
from .gof import cwres_vs_time as cwres_vs_time
from .gof import dv_vs_ipred as dv_vs_ipred
from .gof import dv_vs_pred as dv_vs_pred
from .gof import gof_panel as gof_panel
from .gof import qq_cwres as qq_cwres
from .individual import grid_dataset as grid_dataset
from .individual import individual_fits as individual_fits
from .individual import individual_predictions as individual_predictions
from .vpc import time_bins as time_bins
from .vpc import vpc_from_result as vpc_from_result
from .vpc import vpc_layouts as vpc_layouts
from .vpc import vpc_plot as vpc_plot
from .vpc import vpc_summary as vpc_summary
from .vpc_discrete import km_vpc_plot as km_vpc_plot
from .vpc_discrete import proportion_vpc_plot as proportion_vpc_plot

__all__ = [
    "abs_iwres_vs_ipred", "convergence_plot", "cwres_vs_pred", "cwres_vs_time", "dv_vs_ipred", "dv_vs_pred", "eta_histograms",
    "eta_vs_covariates", "gof_panel", "grid_dataset", "individual_fits", "individual_predictions", "km_vpc_plot",
    "proportion_vpc_plot", "qq_cwres",
    "smooth", "subject_covariates", "time_bins", "vpc_from_result", "vpc_layouts", "vpc_plot",
    "vpc_summary",
]

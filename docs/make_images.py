"""Write the README's images: docs/theophylline_gof.png and docs/theophylline_vpc.png.

    python docs/make_images.py

Fits the theophylline example with FOCE-I (the fit takes about a minute the first time,
while JAX compiles), draws the goodness-of-fit panel, and a VPC of 1000 replicates of
the study simulated at the estimates.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pkmix
import pkmix.plots as pp

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def main() -> int:
    example = ROOT / "examples" / "theophylline"
    model = runpy.run_path(str(example / "model.py"))["model"]
    result = pkmix.fit(model, str(example / "theo_sd.csv"), method="focei", progress=False)
    print(result)
    if not result.converged:
        print("the fit did not converge: no images written", file=sys.stderr)
        return 1
    gof = pp.gof_panel(result)
    gof.savefig(DOCS / "theophylline_gof.png", dpi=100)
    vpc = pp.vpc_from_result(result, n_sim=1000, seed=2024)
    fig = pp.vpc_plot(vpc, title="Theophylline VPC (FOCE-I estimates, 1000 simulated studies)")
    fig.savefig(DOCS / "theophylline_vpc.png", dpi=100)
    print(f"wrote {DOCS / 'theophylline_gof.png'} and {DOCS / 'theophylline_vpc.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A bootstrap and a SIR of the theophylline fit, with their plots.

    python examples/bootstrap_theophylline/run.py            # n = 200 bootstrap, 1000 SIR proposals
    python examples/bootstrap_theophylline/run.py --n 1000

Writes bootstrap_distributions.png, sir_dofv.png and the tables next to this file
(or to --out).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
THEO = HERE.parent / "theophylline"
sys.path.insert(0, str(THEO))

import pkmix  # noqa: E402

from model import model  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="bootstrap replicates")
    parser.add_argument("--samples", type=int, default=1000, help="SIR proposals")
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pkmix.fit(model, THEO / "theo_sd.csv", progress=False)
    print(f"theophylline FOCE-I: OFV {fit.ofv:.3f}")
    boot = pkmix.bootstrap(fit, n=args.n, seed=1, acceleration="jackknife", out=args.out)
    print(boot)
    res = pkmix.sir(fit, samples=args.samples, resamples=args.samples // 5, inflation=1.5, seed=1, out=args.out)
    print(res)
    print(f"plots and tables written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

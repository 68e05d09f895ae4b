"""SSE with an alternative model: bias, precision and coverage of the trial-simulation
model's estimates, and the power of the LRT to detect its treatment effect over
sample sizes (a power curve).

    python examples/sse/run.py                 # 40 replicates per size, 16, 32 and 48 subjects
    python examples/sse/run.py --n 500         # on a GPU, or with time

Writes sse_power.png and the tables next to this file (or to --out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "trial_simulation"))

import pkmix  # noqa: E402

from design import design  # noqa: E402
from model import model, reduced  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="replicates per sample size")
    parser.add_argument("--sizes", default="16,32,48", help="numbers of subjects")
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    res = pkmix.sse(model, design, n=args.n, alt=reduced, n_subjects=sizes, seed=11, out=args.out)
    print(res)
    print(f"plots and tables written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

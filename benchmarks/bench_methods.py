"""SAEM and IMP against FOCE-I on the same data (issue 18).

For each dataset and method, in one process:
  * first fit: compile (the method's programs) and run, wall time and the compile share
    (``result.timing["compile_s"]``);
  * warm fit: the same fit again (nothing compiles; the minimum of ``--repeats``), wall time
    and the estimation share (SAEM: its iterations; FOCE-I/IMP: the L-BFGS loop);
  * the OFV each method reports (SAEM: importance sampling at its estimates, +- the Monte
    Carlo SE) and the IMP OFV at FOCE-I's estimates for comparison.
Fits run without the covariance step and the diagnostics table (the estimation alone;
SAEM's posthoc modes and IMP OFV are included, they are part of its answer).

Run: python benchmarks/bench_methods.py [--datasets theophylline phenobarbital two_cmt]
         [--methods focei imp saem] [--repeats 2]
``two_cmt`` is the tests' recovery design: 2-cmt oral, 5 etas, 200 subjects of 14 samples,
simulated with ``pkmix.simulate``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / name / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.model


def two_cmt():
    sys.path.insert(0, str(ROOT / "tests"))
    import pkmix
    from test_methods_saem import TWO_CMT_DESIGN, TWO_CMT_OMEGA, TWO_CMT_TRUE, two_cmt_model

    truth = two_cmt_model(TWO_CMT_TRUE, TWO_CMT_OMEGA, 0.15)
    data = pkmix.simulate(truth, pkmix.TrialDesign(**TWO_CMT_DESIGN), n=1, seed=11, progress=False)
    start = two_cmt_model({k: v + (0.3 if i % 2 else -0.3) for i, (k, v) in enumerate(TWO_CMT_TRUE.items())},
                          {k: 0.3 for k in TWO_CMT_OMEGA}, 0.3)
    return start, data.drop(columns=["REP"])


def problems(names):
    for name in names:
        if name == "theophylline":
            yield name, load_example(name), ROOT / "tests" / "data" / "theo_sd.csv"
        elif name == "phenobarbital":
            yield name, load_example(name), ROOT / "tests" / "data" / "pheno.csv"
        elif name == "two_cmt":
            yield (name, *two_cmt())
        else:
            raise SystemExit(f"unknown dataset {name!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["theophylline", "phenobarbital", "two_cmt"])
    parser.add_argument("--methods", nargs="+", default=["focei", "imp", "saem"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import jax

    import pkmix

    print(f"device: {jax.devices()[0]}")
    print("| data | method | first fit (s) | of which compile (s) | warm fit (s) | estimation (s) | OFV | "
          "iterations | converged |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, model, data in problems(args.datasets):
        focei_values = None
        for method in args.methods:
            kw = dict(method=method, covariance="none", diagnostics=False, progress=False)
            t = time.perf_counter()
            first = pkmix.fit(model, data, **kw)
            first_s = time.perf_counter() - t
            warm = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                r = pkmix.fit(model, data, **kw)
                warm.append((time.perf_counter() - t, r))
            warm_s, r = min(warm, key=lambda w: w[0])
            ofv = f"{r.ofv:.3f}" + (f" +- {r.ofv_mc_se:.3f}" if r.ofv_mc_se is not None else "")
            print(f"| {name} | {method} | {first_s:.2f} | {first.timing['compile_s']:.2f} | {warm_s:.2f} | "
                  f"{r.timing['estimation_s']:.2f} | {ofv} | {r.iterations} | {r.converged} |", flush=True)
            if method == "focei":
                focei_values = r.values
        if focei_values is None:
            continue
        e = pkmix.evaluate(model, data, method="imp", params=focei_values, diagnostics=False, progress=False)
        print(f"| {name} | IMP OFV at the FOCE-I estimates | | | | | {e.ofv:.3f} +- {e.ofv_mc_se:.3f} | | |",
              flush=True)


if __name__ == "__main__":
    main()

"""Simulate the GLMM reference datasets (numpy only; run once, from this folder).

Each is NONMEM-format (ID, TIME, DV and a covariate X), one random intercept a subject:
  binary.csv   100 subjects x 8 records, logit P(DV = 1) = -0.6 + 1.2 X + b, b ~ N(0, 0.9^2)
  count.csv    100 x 8, log E[DV] = 0.5 + 0.4 X + b, Poisson, b ~ N(0, 0.6^2)
  negbin.csv   60 x 8, log mu = 1.0 + 0.5 X + b, NB2 variance mu + 0.5 mu^2, b ~ N(0, 0.5^2)
  ordinal.csv  80 x 6, P(DV <= k) = logistic(c_k - 1.0 X - b), c = (-1, 0.5, 2), b ~ N(0, 1)
  binomial.csv 80 x 5, DV successes of N (1..10, column N), logit p = 0.3 - 0.8 X + b, b ~ N(0, 0.7^2)
"""

import numpy as np
import pandas as pd

rng = np.random.default_rng(20261206)


def frame(n, m):
    ids = np.repeat(np.arange(1, n + 1), m)
    return ids, np.tile(np.arange(m, dtype=float), n), np.round(rng.normal(size=n * m), 3)


def write(name, ids, time, dv, x):
    pd.DataFrame({"ID": ids, "TIME": time, "DV": dv.astype(int), "X": x}).to_csv(name, index=False)


ids, t, x = frame(100, 8)
b = rng.normal(0.0, 0.9, 100)[ids - 1]
p = 1.0 / (1.0 + np.exp(-(-0.6 + 1.2 * x + b)))
write("binary.csv", ids, t, (rng.uniform(size=p.size) < p), x)

ids, t, x = frame(100, 8)
b = rng.normal(0.0, 0.6, 100)[ids - 1]
write("count.csv", ids, t, rng.poisson(np.exp(0.5 + 0.4 * x + b)), x)

ids, t, x = frame(60, 8)
b = rng.normal(0.0, 0.5, 60)[ids - 1]
mu, alpha = np.exp(1.0 + 0.5 * x + b), 0.5
write("negbin.csv", ids, t, rng.poisson(rng.gamma(1.0 / alpha, alpha * mu)), x)

ids, t, x = frame(80, 6)
b = rng.normal(0.0, 1.0, 80)[ids - 1]
cuts = np.array([-1.0, 0.5, 2.0])
cum = 1.0 / (1.0 + np.exp(-(cuts[None, :] - (1.0 * x + b)[:, None])))
u = rng.uniform(size=x.size)
write("ordinal.csv", ids, t, (u[:, None] > cum).sum(axis=1), x)

ids, t, x = frame(80, 5)
b = rng.normal(0.0, 0.7, 80)[ids - 1]
trials = rng.integers(1, 11, size=x.size)
p = 1.0 / (1.0 + np.exp(-(0.3 - 0.8 * x + b)))
pd.DataFrame({"ID": ids, "TIME": t, "DV": rng.binomial(trials, p), "N": trials, "X": x}).to_csv(
    "binomial.csv", index=False)

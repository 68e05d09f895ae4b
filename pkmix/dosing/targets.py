"""Exposure targets: `Target` (AUC24, AUC over the interval or a window, trough, peak,
concentration at a time, %T>MIC) and the model's default target."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

TARGET_KINDS = {
    "auc24": "AUC over 24 h at steady state (mg*h/L for mg and L)",
    "auc": "AUC over the dosing interval at steady state, or over [start, end] h after the start of a dose",
    "trough": "concentration just before the next dose at steady state",
    "peak": "concentration at `time` h after the start of the infusion at steady state "
            "(default: the end of the infusion; oral: the maximum)",
    "conc": "concentration at `time` h after a dose at steady state",
    "ft_mic": "percentage of the dosing interval with the concentration above `mic`",
}
_ALIASES = {"auc_24": "auc24", "auc0-24": "auc24", "auctau": "auc", "auc_tau": "auc", "cmin": "trough",
            "cmax": "peak", "c": "conc", "ftmic": "ft_mic", "t>mic": "ft_mic", "fmic": "ft_mic", "%t>mic": "ft_mic"}
POINT_TOLERANCE = 0.10  # a point target v counts as attained within v +/- 10 %
PTA_TIE = 0.02  # PTA differences smaller than this are Monte Carlo noise when choosing


@dataclasses.dataclass(frozen=True)
class Target:
    """An exposure target.

    Args:
        kind: one of ``auc24``, ``auc``, ``trough``, ``peak``, ``conc``, ``ft_mic``.
        low, high: the target range (either may be None for a one-sided target).
        value: a point target instead of a range (attained within ``+/- tolerance``).
        time: hours after the start of the dose for ``peak`` (default the end of the
            infusion) and ``conc`` (required).
        mic: the MIC for ``ft_mic`` (then ``low``/``high``/``value`` are percentages).
        start, end: a window for ``auc`` (hours after the start of the dose).
        aim: the value the dose is solved for (default: the point, the middle of the
            range, or the one bound given).
        tolerance: relative half-width of a point target.

    Example:
        >>> Target("auc24", 400, 600)
        >>> Target("trough", value=15)
        >>> Target("ft_mic", low=50, mic=2)
        >>> Target.parse("peak=20:40,time=1")
    """

    kind: str
    low: float | None = None
    high: float | None = None
    value: float | None = None
    time: float | None = None
    mic: float | None = None
    start: float | None = None
    end: float | None = None
    aim: float | None = None
    tolerance: float = POINT_TOLERANCE

    def __post_init__(self):
        kind = _ALIASES.get(str(self.kind).strip().lower(), str(self.kind).strip().lower())
        if kind not in TARGET_KINDS:
            raise ValueError(f"target kind '{self.kind}' is not known; use one of {', '.join(TARGET_KINDS)}")
        object.__setattr__(self, "kind", kind)
        low, high = self.low, self.high
        if self.value is not None:
            if low is not None or high is not None:
                raise ValueError("target: give either value= (a point) or low=/high= (a range), not both")
            v = float(self.value)
            if not v > 0:
                raise ValueError(f"target {kind}: the value must be positive, got {v:g}")
            low, high = v * (1 - self.tolerance), v * (1 + self.tolerance)
            object.__setattr__(self, "aim", float(self.aim) if self.aim is not None else v)
        if low is None and high is None:
            raise ValueError(f"target {kind}: give a value, a range low:high, or one bound")
        for name, x in (("low", low), ("high", high)):
            if x is not None and not (math.isfinite(float(x)) and float(x) >= 0):
                raise ValueError(f"target {kind}: {name} must be a non-negative number, got {x!r}")
        if low is not None and high is not None and float(low) > float(high):
            raise ValueError(f"target {kind}: low {low:g} is above high {high:g}")
        object.__setattr__(self, "low", None if low is None else float(low))
        object.__setattr__(self, "high", None if high is None else float(high))
        if kind == "ft_mic":
            if self.mic is None or not float(self.mic) > 0:
                raise ValueError("target ft_mic needs a positive mic=")
            for x in (self.low, self.high):
                if x is not None and x > 100:
                    raise ValueError(f"target ft_mic is a percentage of the interval; {x:g} is above 100")
        if kind == "conc" and self.time is None:
            raise ValueError("target conc needs time= (hours after the start of the dose)")
        if self.time is not None and not float(self.time) >= 0:
            raise ValueError(f"target {kind}: time must be >= 0, got {self.time!r}")
        if (self.start is None) != (self.end is None):
            raise ValueError("target auc: give both start= and end= for a window")
        if self.start is not None:
            if kind != "auc":
                raise ValueError(f"start/end apply to an auc target, not {kind}")
            if not 0 <= float(self.start) < float(self.end):
                raise ValueError(f"target auc window: need 0 <= start < end, got {self.start:g} to {self.end:g}")
        if self.aim is None:
            if self.low is not None and self.high is not None:
                aim = 0.5 * (self.low + self.high)
            else:
                aim = self.low if self.low is not None else self.high
            object.__setattr__(self, "aim", float(aim))
        if not self.aim > 0:
            raise ValueError(f"target {kind}: the aim must be positive, got {self.aim:g}")

    @classmethod
    def parse(cls, text: str) -> "Target":
        """``"auc24=400:600"``, ``"trough=15"`` (point), ``"trough=10:"`` (at least 10),
        ``"peak=20:40,time=1"``, ``"ft_mic=50:,mic=2"``, ``"auc=200:300,start=0,end=12"``."""
        parts = [p.strip() for p in str(text).split(",") if p.strip()]
        if not parts or "=" not in parts[0]:
            raise ValueError(f"target '{text}': expected KIND=LOW:HIGH or KIND=VALUE (e.g. auc24=400:600)")
        kind, rng = (x.strip() for x in parts[0].split("=", 1))
        kwargs: dict[str, Any] = {}
        try:
            if ":" in rng:
                lo, hi = rng.split(":", 1)
                kwargs["low"] = float(lo) if lo.strip() else None
                kwargs["high"] = float(hi) if hi.strip() else None
            else:
                kwargs["value"] = float(rng)
            for extra in parts[1:]:
                if "=" not in extra:
                    raise ValueError(f"'{extra}' is not key=value")
                k, v = (x.strip() for x in extra.split("=", 1))
                if k not in ("time", "mic", "start", "end", "aim", "tolerance"):
                    raise ValueError(f"unknown option '{k}' (time, mic, start, end, aim, tolerance)")
                kwargs[k] = float(v)
        except ValueError as e:
            raise ValueError(f"target '{text}': {e}") from None
        return cls(kind, **kwargs)

    def attained(self, x):
        x = np.asarray(x, dtype=float)
        ok = np.isfinite(x)
        if self.low is not None:
            ok &= x >= self.low
        if self.high is not None:
            ok &= x <= self.high
        return ok

    def distance(self, x) -> np.ndarray:
        """Relative distance from the range (0 inside)."""
        x = np.asarray(x, dtype=float)
        d = np.zeros_like(x)
        if self.low is not None:
            d = np.maximum(d, (self.low - x) / self.aim)
        if self.high is not None:
            d = np.maximum(d, (x - self.high) / self.aim)
        return np.where(np.isfinite(x), d, np.inf)

    def describe(self, unit: str = "") -> str:
        if self.kind == "auc24":
            name = "AUC24"
        elif self.kind == "auc":
            name = "AUC(interval)" if self.start is None else f"AUC({self.start:g}-{self.end:g} h)"
        elif self.kind == "ft_mic":
            name = f"%T>MIC({self.mic:g})"
        elif self.kind == "conc":
            name = f"C({self.time:g} h after dose)"
        elif self.kind == "peak" and self.time is not None:
            name = f"peak ({self.time:g} h after start)"
        else:
            name = self.kind
        u = "%" if self.kind == "ft_mic" else (f" {unit}" if unit else "")
        if self.value is not None:
            return f"{name} = {self.value:g}{u}"
        if self.low is not None and self.high is not None:
            return f"{name} {self.low:g}-{self.high:g}{u}"
        return f"{name} >= {self.low:g}{u}" if self.low is not None else f"{name} <= {self.high:g}{u}"


def default_target(info) -> Target:
    """The first target in the model's METADATA['targets'] with a ``range`` [low, high]
    (None for an open end: ``[None, 1.0]`` is ``:1``, at most 1), with the entry's
    ``time`` and ``mic`` when given. Entries that are not dose targets (an unknown kind,
    a timed target without its time) are passed over."""
    targets = info.metadata.get("targets") or {}
    for kind, spec in targets.items():
        rng = spec.get("range") if isinstance(spec, dict) else spec
        if not (isinstance(rng, (list, tuple)) and len(rng) == 2):
            continue
        try:
            low, high = (None if x is None else float(x) for x in rng)
            extra = {k: float(spec[k]) for k in ("time", "mic") if isinstance(spec, dict) and spec.get(k) is not None}
        except (TypeError, ValueError):
            raise ValueError(f"model {info.name}: METADATA['targets']['{kind}'] must have a range of two numbers "
                             f"(None for an open end) and a numeric time/mic, got {spec!r}") from None
        try:
            return Target(kind, low, high, **extra)
        except ValueError:
            continue
    # The message starts with the field it concerns ("target: ..."): the dosing service
    # and the web app name the field from it.
    raise ValueError(f"target: none given, and model {info.name} lists none in METADATA['targets']; "
                     "give one, e.g. trough=5:10 or auc24=400:600")

"""The concentration-time picture of one answer: its numbers (``curves``) and an SVG.

The history and the proposed regimen are drawn from the dosing library's own MAP
curves (`MAPResult.curve`, `Recommendation.curve`); the band is the 5th-95th percentile
of the individual prediction over draws of the etas from the MAP's posterior
approximation N(eta_hat, Cov) (parameter uncertainty, not residual error), each
continued through the proposed regimen by `continue_history`, the program the
recommendation itself uses. The SVG is written here, on the server, so the page needs
no plotting library and nothing from the network.
"""

from __future__ import annotations

import dataclasses
import html
import math

import numpy as np

from ..dosing.service import to_json_safe

BAND_DRAWS = 60
BAND_POINTS = 200


def _future_doses(rec, cmt: int) -> list:
    """The proposed regimen's doses [(time, amount, infusion h, cmt)] over the curve's span."""
    reg = rec.regimen
    if rec.curve is None or reg.start_time is None:
        return []
    end = float(np.max(rec.curve["TIME"]))
    tinf = 0.0 if reg.route == "oral" else float(reg.infusion_duration)
    doses = []
    k = 0
    while reg.start_time + k * reg.interval <= end and len(doses) < 16:
        t = reg.start_time + k * reg.interval
        if k == 0 and reg.loading_dose:
            ld_tinf = 0.0 if reg.route == "oral" else float(reg.loading_infusion_duration or tinf)
            doses.append((t, float(reg.loading_dose), ld_tinf, cmt))
        else:
            doses.append((t, float(reg.dose), tinf, cmt))
        k += 1
    return doses


def _dose_compartment(fit, route: str | None) -> int | None:
    """The compartment the proposed regimen's doses go to: the last dose's when the route
    is the same, else the model's for that route (None if it cannot be told)."""
    last = fit.bound.last_dose or {}
    if last.get("cmt") is not None and (route or "").lower() == (fit.bound.route or "").lower():
        return int(last["cmt"])
    try:  # the binding's rule (a private helper of the dosing package; its home has moved before)
        try:
            from ..dosing.binding import _dose_compartment as rule
        except ImportError:
            from ..dosing.patient import _dose_compartment as rule
        return int(rule(fit.info, (route or fit.bound.route or "iv").lower(), None, "route"))
    except Exception:  # noqa: BLE001 - without it the plot shows the MAP curves only
        return None


def curves(fit, rec, *, seed: int = 0) -> dict:
    """Plain-JSON curves of one answer: ``history`` (TIME, IPRED, PRED up to the new
    regimen), ``regimen`` (TIME, IPRED), ``band`` (TIME, low, high; empty if it cannot
    be drawn), ``levels``, ``doses`` (given and proposed) and the target's limits."""
    from ..dosing.regimen import continue_history

    start = rec.regimen.start_time
    hist = fit.curve
    if start is not None:
        hist = hist[hist["TIME"] <= start]
    out = {
        "history": {"TIME": hist["TIME"].to_numpy(), "IPRED": hist["IPRED"].to_numpy(),
                    "PRED": hist["PRED"].to_numpy()},
        "regimen": ({"TIME": rec.curve["TIME"].to_numpy(), "IPRED": rec.curve["IPRED"].to_numpy()}
                    if rec.curve is not None else {"TIME": [], "IPRED": []}),
        "band": {"TIME": [], "low": [], "high": [], "level": 0.90, "draws": 0},
        "start_time": start,
    }
    obs = fit.observations
    out["levels"] = [{"TIME": float(r["TIME"]), "DV": float(r["DV"]), "BLQ": bool(r["BLQ"]),
                      "LLOQ": float(r["LLOQ"])} for r in obs.to_dict("records")]
    recs = fit.bound.records
    given = np.isin(recs["EVID"], (1, 4))
    out["doses"] = [{"TIME": float(t), "AMT": float(a), "proposed": False}
                    for t, a in zip(recs["TIME"][given], recs["AMT"][given])]
    cmt = _dose_compartment(fit, rec.regimen.route)
    future = _future_doses(rec, cmt) if cmt is not None else []
    out["doses"] += [{"TIME": t, "AMT": a, "proposed": True} for t, a, *_ in future]
    t = rec.target
    out["target"] = {"kind": t.kind, "low": t.low, "high": t.high}

    # The band needs the dose compartment of the proposed regimen (that of the last dose
    # given by the same route); without it the plot shows the MAP curves only.
    cov = np.asarray(fit.covariance, float)
    if future and np.all(np.isfinite(cov)) and np.all(np.isfinite(fit.eta)):
        t0 = float(hist["TIME"].min()) if len(hist) else 0.0
        t1 = float(np.max(out["regimen"]["TIME"])) if len(out["regimen"]["TIME"]) else t0 + 24.0
        grid = np.linspace(t0, t1, BAND_POINTS)
        try:
            chol = np.linalg.cholesky(cov + 1e-12 * np.eye(len(cov)))
        except np.linalg.LinAlgError:
            chol = None
        if chol is not None:
            rng = np.random.default_rng(seed)
            draws = fit.eta + rng.standard_normal((BAND_DRAWS, len(fit.eta))) @ chol.T
            sims = np.stack([continue_history(dataclasses.replace(fit, eta=e), future, curve=grid)[1]
                             for e in draws])
            ok = np.all(np.isfinite(sims), axis=1)
            if ok.sum() >= BAND_DRAWS // 2:
                lo, hi = np.percentile(sims[ok], [5.0, 95.0], axis=0)
                out["band"] = {"TIME": grid, "low": lo, "high": hi, "level": 0.90, "draws": int(ok.sum())}
    return to_json_safe(out)


# ---------------------------------------------------------------------------- SVG
W, H = 860, 360
ML, MR, MT, MB = 64, 16, 16, 44


def _ticks(lo: float, hi: float, n: int = 6) -> list:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _finite(xs) -> list:
    return [x for x in xs if x is not None and math.isfinite(x)]


def svg(c: dict, units: dict, *, title: str = "") -> str:
    """An SVG drawing of `curves`' output (``units``: the answer's ``dose``, ``conc``)."""
    xs = _finite(c["history"]["TIME"]) + _finite(c["regimen"]["TIME"]) + [lv["TIME"] for lv in c["levels"]]
    ys = (_finite(c["history"]["IPRED"]) + _finite(c["history"]["PRED"]) + _finite(c["regimen"]["IPRED"])
          + _finite(c["band"]["high"]) + [lv["DV"] for lv in c["levels"]])
    tg = c.get("target") or {}
    if tg.get("kind") in ("trough", "peak", "conc"):
        ys += _finite([tg.get("low"), tg.get("high")])
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 24.0)
    if x1 <= x0:
        x1 = x0 + 1.0
    y1 = max(ys) * 1.08 if ys and max(ys) > 0 else 1.0
    pw, ph = W - ML - MR, H - MT - MB

    def X(x):
        return ML + (x - x0) / (x1 - x0) * pw

    def Y(y):
        return MT + ph - min(max(y, 0.0), y1) / y1 * ph

    def path(ts, vs):
        pts = [(X(t), Y(v)) for t, v in zip(ts, vs) if t is not None and v is not None]
        return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(pts))

    e = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" class="conc-plot" role="img" '
           f'aria-label="{e(title or "concentration-time plot")}">',
           f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>']
    for t in _ticks(0.0, y1):
        out.append(f'<line x1="{ML}" x2="{ML + pw}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#eee"/>'
                   f'<text x="{ML - 6}" y="{Y(t) + 4:.1f}" text-anchor="end" font-size="11">{t:g}</text>')
    for t in _ticks(x0, x1, 8):
        out.append(f'<line x1="{X(t):.1f}" x2="{X(t):.1f}" y1="{MT + ph}" y2="{MT + ph + 4}" stroke="#666"/>'
                   f'<text x="{X(t):.1f}" y="{MT + ph + 16}" text-anchor="middle" font-size="11">{t:g}</text>')
    out.append(f'<text x="{ML + pw / 2}" y="{H - 6}" text-anchor="middle" font-size="12">time (h)</text>'
               f'<text transform="translate(14,{MT + ph / 2}) rotate(-90)" text-anchor="middle" font-size="12">'
               f'concentration ({e(units.get("conc", ""))})</text>')
    if tg.get("kind") in ("trough", "peak", "conc"):
        lo = tg.get("low") if tg.get("low") is not None else 0.0
        hi = tg.get("high") if tg.get("high") is not None else y1
        out.append(f'<rect class="target-band" x="{ML}" y="{Y(hi):.1f}" width="{pw}" height="{Y(lo) - Y(hi):.1f}" '
                   f'fill="#2ca02c" opacity="0.10"><title>target {e(tg["kind"])}</title></rect>')
    for d in c["doses"]:
        colour = "#2ca02c" if d["proposed"] else "#888"
        out.append(f'<line class="dose{" proposed" if d["proposed"] else ""}" x1="{X(d["TIME"]):.1f}" '
                   f'x2="{X(d["TIME"]):.1f}" y1="{MT}" y2="{MT + ph}" stroke="{colour}" stroke-width="0.6" '
                   f'stroke-dasharray="{"4 3" if d["proposed"] else ""}"><title>{"proposed " if d["proposed"] else ""}'
                   f'dose {d["AMT"]:g} {e(units.get("dose", ""))} at {d["TIME"]:g} h</title></line>')
    b = c["band"]
    if len(b["TIME"]):
        upper = [(X(t), Y(v)) for t, v in zip(b["TIME"], b["high"]) if v is not None]
        lower = [(X(t), Y(v)) for t, v in zip(b["TIME"], b["low"]) if v is not None]
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in upper + lower[::-1])
        out.append(f'<polygon class="band" points="{pts}" fill="#1f77b4" opacity="0.18">'
                   f'<title>{100 * b["level"]:.0f}% credible band ({b["draws"]} posterior draws)</title></polygon>')
    hst = c["history"]
    out.append(f'<path class="pred" d="{path(hst["TIME"], hst["PRED"])}" fill="none" stroke="#1f77b4" '
               f'stroke-dasharray="2 3" stroke-width="1.2"/>')
    out.append(f'<path class="ipred" d="{path(hst["TIME"], hst["IPRED"])}" fill="none" stroke="#1f77b4" '
               f'stroke-width="2"/>')
    r = c["regimen"]
    out.append(f'<path class="proposed" d="{path(r["TIME"], r["IPRED"])}" fill="none" stroke="#2ca02c" '
               f'stroke-width="2"/>')
    if c.get("start_time") is not None:
        xs_ = X(c["start_time"])
        out.append(f'<line x1="{xs_:.1f}" x2="{xs_:.1f}" y1="{MT}" y2="{MT + ph}" stroke="#2ca02c" stroke-width="1.2"/>'
                   f'<text x="{xs_ + 4:.1f}" y="{MT + 12}" font-size="11" fill="#2ca02c">new regimen</text>')
    for i, lv in enumerate(c["levels"]):
        y = lv["LLOQ"] if lv["BLQ"] else lv["DV"]
        fill = "none" if lv["BLQ"] else "#000"
        out.append(f'<circle class="level" data-index="{i}" cx="{X(lv["TIME"]):.1f}" cy="{Y(y):.1f}" r="4" '
                   f'fill="{fill}" stroke="#000"><title>level {i + 1}: {"below LLOQ " if lv["BLQ"] else ""}'
                   f'{y:g} {e(units.get("conc", ""))} at {lv["TIME"]:g} h</title></circle>')
    legend = [("#1f77b4", "", "individual (MAP)"), ("#1f77b4", "2 3", "population (typical)"),
              ("#2ca02c", "", "proposed regimen")]
    lx = ML + pw - 190
    out.append(f'<rect x="{lx - 8}" y="{MT + 6}" width="192" height="{18 * (len(legend) + 2) + 4}" fill="#fff" '
               f'opacity="0.85" stroke="#ccc"/>')
    for i, (colour, dash, label) in enumerate(legend):
        y = MT + 20 + 18 * i
        out.append(f'<line x1="{lx}" x2="{lx + 24}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2" '
                   f'stroke-dasharray="{dash}"/><text x="{lx + 30}" y="{y + 4}" font-size="11">{label}</text>')
    y = MT + 20 + 18 * len(legend)
    out.append(f'<rect x="{lx}" y="{y - 6}" width="24" height="12" fill="#1f77b4" opacity="0.18"/>'
               f'<text x="{lx + 30}" y="{y + 4}" font-size="11">90% credible band</text>')
    y += 18
    out.append(f'<circle cx="{lx + 12}" cy="{y}" r="4" fill="#000"/><text x="{lx + 30}" y="{y + 4}" '
               f'font-size="11">measured levels</text>')
    out.append("</svg>")
    return "".join(out)

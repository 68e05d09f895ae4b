"""A control stream -> a pkmix model file (Python source), which is then run as the model.

The one path: ``to_source`` writes the model file that ``pkmix import`` prints, and
``load`` executes that same source, so what ``pkmix fit RUN.mod`` estimates is what the
user can read.
"""

from __future__ import annotations

import keyword
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _code as C
from ._data import PASSED, RESERVED, DataSpec, InputItem, parse_data, parse_input
from ._records import (SUPPORTED, ControlStreamError, RandomBlock, Record, ThetaInit, options, parse_random,
                       parse_thetas, split_records)


def _v(n):
    return ("var", n)


def _div(a, b):
    return ("/", a, b)


def _sub(a, b):
    return ("-", a, b)


ONE = ("num", 1.0)
# ADVAN -> (compartments, observed compartment (1-based), pkmix structure call,
#           {TRANS: {pkmix parameter: expression of NONMEM names}})
ADVANS = {
    1: (("central",), 1, "pkmix.one_compartment()",
        {1: {"cl": _v("K"), "v": ONE}, 2: {"cl": _v("CL"), "v": _v("V")}}),
    2: (("depot", "central"), 2, "pkmix.one_compartment(depot=True)",
        {1: {"cl": _v("K"), "v": ONE, "ka": _v("KA")}, 2: {"cl": _v("CL"), "v": _v("V"), "ka": _v("KA")}}),
    3: (("central", "peripheral"), 1, "pkmix.two_compartment()",
        {1: {"cl": _v("K"), "v1": ONE, "q": _v("K12"), "v2": _div(_v("K12"), _v("K21"))},
         3: {"cl": _v("CL"), "v1": _v("V"), "q": _v("Q"), "v2": _sub(_v("VSS"), _v("V"))},
         4: {"cl": _v("CL"), "v1": _v("V1"), "q": _v("Q"), "v2": _v("V2")}}),
    4: (("depot", "central", "peripheral"), 2, "pkmix.two_compartment(depot=True)",
        {1: {"cl": _v("K"), "v1": ONE, "q": _v("K23"), "v2": _div(_v("K23"), _v("K32")), "ka": _v("KA")},
         3: {"cl": _v("CL"), "v1": _v("V"), "q": _v("Q"), "v2": _sub(_v("VSS"), _v("V")), "ka": _v("KA")},
         4: {"cl": _v("CL"), "v1": _v("V2"), "q": _v("Q"), "v2": _v("V3"), "ka": _v("KA")}}),
    11: (("central", "peripheral1", "peripheral2"), 1, "pkmix.three_compartment()",
         {1: {"cl": _v("K"), "v1": ONE, "q2": _v("K12"), "v2": _div(_v("K12"), _v("K21")), "q3": _v("K13"),
              "v3": _div(_v("K13"), _v("K31"))},
          4: {"cl": _v("CL"), "v1": _v("V1"), "q2": _v("Q2"), "v2": _v("V2"), "q3": _v("Q3"), "v3": _v("V3")}}),
    12: (("depot", "central", "peripheral1", "peripheral2"), 2, "pkmix.three_compartment(depot=True)",
         {1: {"cl": _v("K"), "v1": ONE, "q2": _v("K23"), "v2": _div(_v("K23"), _v("K32")), "q3": _v("K24"),
              "v3": _div(_v("K24"), _v("K42")), "ka": _v("KA")},
          4: {"cl": _v("CL"), "v1": _v("V2"), "q2": _v("Q3"), "v2": _v("V3"), "q3": _v("Q4"), "v3": _v("V4"),
              "ka": _v("KA")}}),
}
# NONMEM's TRANS2 for ADVAN3/4/11/12 is TRANS4's names.
DEFAULT_TRANS = {1: 2, 2: 2, 3: 4, 4: 4, 11: 4, 12: 4}
SPECIAL = {"NEWIND", "ICALL", "IREP", "IPRED_", "MIXNUM", "MIXEST", "IERPRD", "IERPK", "MTIME", "MTDIFF",
           "COMACT", "COMSAV", "NIREC", "NDREC", "TSCALE", "XSCALE", "FO", "F0", "S0", "F_FLAG", "MDVRES",
           "CUMD", "DOSTIM", "DOSREC", "LIREC", "FIRSTOBS"}
METHODS = {("0", False): "fo", ("1", False): "foce", ("1", True): "focei"}
_RESERVED_PY = {"p", "a", "t", "f", "eps", "jnp", "jax", "pkmix", "np", "math"}


@dataclass
class ControlStream:
    """What a control stream says, parsed (no model built yet)."""

    path: Path | None
    problem: str
    records: list[Record]
    input: list[InputItem]
    data: DataSpec | None
    advan: int | None  # None: $PRED
    trans: int | None
    compartments: tuple[str, ...]
    observed: int
    default_dose: int
    pk: list
    error: list
    des: list
    thetas: list[ThetaInit]
    omegas: list[RandomBlock]
    sigmas: list[RandomBlock]
    estimation: dict = field(default_factory=dict)
    covariance: dict | None = None
    tables: list = field(default_factory=list)
    tol: int | None = None
    # $PRED: the $PK-side variable that holds the prediction (Y at EPS = 0); None with $PK/$ERROR.
    pred_f: str | None = None

    def record(self, name):
        return next((r for r in self.records if r.name == name), None)


def read(source: str | os.PathLike, text: str | None = None) -> ControlStream:
    """Parse a control stream (a path, or ``text`` with ``source`` naming it)."""
    path = None
    if text is None:
        path = Path(source)
        if not path.exists():
            raise ControlStreamError(f"control stream not found: {source}")
        text = path.read_text(errors="replace")
    records = split_records(text)
    by_name: dict[str, list[Record]] = {}
    for r in records:
        if r.name not in SUPPORTED:
            raise ControlStreamError(f"{r.where()}: ${r.name} is not supported by pkmix import")
        by_name.setdefault(r.name, []).append(r)
    for name in ("PROBLEM", "INPUT", "DATA", "SUBROUTINES", "PK", "ERROR", "MODEL", "DES", "COVARIANCE"):
        if len(by_name.get(name, [])) > 1:
            second = by_name[name][1]
            second.fail(f"a second ${name}: pkmix import takes one problem with one ${name}")
    if "INPUT" not in by_name:
        raise ControlStreamError("no $INPUT record")
    problem = by_name["PROBLEM"][0].text.strip() if "PROBLEM" in by_name else ""
    replace = C.replacements(by_name.get("ABBREVIATED", []))
    pred_record = by_name["PRED"][0] if "PRED" in by_name else None
    if pred_record is not None:
        for name in ("PK", "ERROR", "SUBROUTINES", "MODEL", "DES"):
            if name in by_name:
                by_name[name][0].fail(f"${name} with $PRED: a $PRED model has no compartments")
        if len(by_name["PRED"]) > 1:
            by_name["PRED"][1].fail("a second $PRED: pkmix import takes one problem with one $PRED")
        pred = C.lower(C.parse_code(pred_record, replace), pred_record)
        pk, error, pred_f = _split_pred(pred, pred_record)
        return _finish(path, problem, records, by_name, replace, advan=None, trans=None, comps=(), observed=0,
                       default_dose=0, pk=pk, error=error, des=[], tol=None, pred_f=pred_f)
    if "PK" not in by_name:
        raise ControlStreamError("no $PK record: pkmix import needs $SUBROUTINES ADVAN.. with $PK and $ERROR, "
                                 "or $PRED")
    if "ERROR" not in by_name:
        raise ControlStreamError("no $ERROR record: pkmix import needs $ERROR with Y = ... EPS(n)")
    if "SUBROUTINES" not in by_name:
        raise ControlStreamError("no $SUBROUTINES record (ADVAN..)")

    sub = by_name["SUBROUTINES"][0]
    advan = trans = tol = None
    for key, value in options(sub.text):
        m = re.match(r"^(ADVAN|TRANS)(\d+)$", key)
        if m and value is None:
            if m.group(1) == "ADVAN":
                advan = int(m.group(2))
            else:
                trans = int(m.group(2))
        elif key in ("TOL", "ATOL") and value is not None:
            tol = int(float(value)) if key == "TOL" else tol
        elif key in ("SS1", "SS2", "SS3", "SS4", "SS5", "SS6", "SS9", "SS11", "SS12", "SS13"):
            continue
        else:
            sub.fail(f"{key}{'=' + value if value else ''} is not supported (pkmix import takes ADVAN, TRANS, TOL)")
    if advan is None:
        sub.fail("no ADVANn")
    if advan in ADVANS:
        comps, observed, _call, transes = ADVANS[advan]
        trans = trans or 1
        if trans == 2 and advan in (3, 4, 11, 12):
            trans = 4
        if trans not in transes:
            sub.fail(f"ADVAN{advan} TRANS{trans} is not supported (supported: "
                     f"{', '.join(f'TRANS{t}' for t in sorted(transes))})")
        default_dose = 1
        if "MODEL" in by_name or "DES" in by_name:
            sub.fail(f"ADVAN{advan} takes no $MODEL/$DES")
    elif advan in (6, 8, 9, 13, 14, 15):
        if advan not in (6, 13):
            sub.fail(f"ADVAN{advan} is not supported (use ADVAN6 or ADVAN13 for a general ODE model)")
        if "MODEL" not in by_name or "DES" not in by_name:
            sub.fail(f"ADVAN{advan} needs $MODEL and $DES")
        comps, observed, default_dose = _parse_model(by_name["MODEL"][0])
        trans = trans or 1
        if trans != 1:
            sub.fail(f"ADVAN{advan} takes TRANS1 only")
    else:
        sub.fail(f"ADVAN{advan} is not supported (supported: ADVAN1-4, 11, 12, 6, 13)")

    return _finish(path, problem, records, by_name, replace, advan=advan, trans=trans, comps=comps,
                   observed=observed, default_dose=default_dose,
                   pk=C.lower(C.parse_code(by_name["PK"][0], replace), by_name["PK"][0]),
                   error=C.lower(C.parse_code(by_name["ERROR"][0], replace), by_name["ERROR"][0]),
                   des=C.lower(C.parse_code(by_name["DES"][0], replace), by_name["DES"][0])
                   if "DES" in by_name else [], tol=tol)


def _split_pred(pred: list, record: Record):
    """$PRED's code -> ($PK-like code without EPS, the Y statement as $ERROR would write it
    with F for the prediction, the name of the $PK-side variable that holds the prediction).

    The prediction is Y at EPS = 0, written with the EPS-free variables ($PRED's IPRED, ...);
    the residual error is Y with that prediction replaced by F, as for $ERROR."""
    if ("var", "Y") not in {s.target for s in pred}:
        record.fail("Y is never assigned")
    for s in pred:
        if s.target[0] != "var":
            record.fail("DADT(n) needs $DES", s.line)
        if C.symbols(s.value, ("a",)):
            record.fail("A(n) in $PRED: a $PRED model has no compartments", s.line)
    tainted = {("var", "Y")}
    changed = True
    while changed:
        changed = False
        for s in pred:
            if s.target not in tainted and (C.symbols(s.value, ("eps",)) or C.symbols(s.value) & tainted):
                tainted.add(s.target)
                changed = True
    pk = [s for s in pred if s.target not in tainted]
    y_code = C.needed(pred, {("var", "Y")})
    y_line = max(s.line for s in y_code if s.target == ("var", "Y"))
    zero = {e: ("num", 0.0) for st in y_code for e in C.symbols(st.value, ("eps",))}
    y_full = C.simplify(C.inline(y_code, ("var", "Y")))
    y0 = C.simplify(C.substitute(y_full, zero))
    y0_pk = C.simplify(C.substitute(C.inline(y_code, ("var", "Y"), stop={s.target for s in pk}), zero))
    if C.symbols(y0_pk, ("eps",)):
        record.fail("Y at EPS = 0 still depends on EPS", y_line)
    if y0_pk[0] == "var" and y0_pk in {s.target for s in pk}:
        pred_f = y0_pk[1]
    else:
        assigned = {s.target[1] for s in pred}
        pred_f, i = "YPRED", 2
        while pred_f in assigned:
            pred_f, i = f"YPRED{i}", i + 1
        pk = pk + [C.Flat(("var", pred_f), y0_pk, y_line)]
    error = [C.Flat(("var", "Y"), C.simplify(C.substitute(y_full, {y0: ("var", "F")})), y_line)]
    return pk, error, pred_f


def _finish(path, problem, records, by_name, replace, *, advan, trans, comps, observed, default_dose, pk, error,
            des, tol, pred_f=None) -> ControlStream:
    thetas = [t for r in by_name.get("THETA", []) for t in parse_thetas(r)]
    omegas = [parse_random(r) for r in by_name.get("OMEGA", [])]
    sigmas = [parse_random(r) for r in by_name.get("SIGMA", [])]
    for r, b in zip(by_name.get("SIGMA", []), sigmas):
        if b.block and (b.size > 2 or b.same):
            r.fail("a $SIGMA BLOCK(n) with n > 2 or SAME is not supported (BLOCK(2): two correlated EPS)")
    if not thetas:
        raise ControlStreamError("no $THETA record")
    if not sigmas:
        raise ControlStreamError("no $SIGMA record")

    cs = ControlStream(
        path=path, problem=problem, records=records, input=parse_input(by_name["INPUT"][0]),
        data=parse_data(by_name["DATA"][0]) if "DATA" in by_name else None, advan=advan, trans=trans,
        compartments=comps, observed=observed, default_dose=default_dose, pk=pk, error=error, des=des,
        thetas=thetas, omegas=omegas, sigmas=sigmas, tol=tol, pred_f=pred_f)
    # NONMEM runs each $EST in turn; pkmix runs the last one it has a method for (the
    # others, e.g. an IMP step after FOCE-I to report its OFV, are named in the model file).
    ests = by_name.get("ESTIMATION", [])
    parsed, refused = [], []
    for r in ests:
        try:
            parsed.append(_parse_estimation(r))
        except ControlStreamError as e:
            refused.append(e)
    if ests and not parsed:
        raise refused[-1]
    if parsed:
        cs.estimation = dict(parsed[-1], skipped=[str(e) for e in refused])
    if "COVARIANCE" in by_name:
        cs.covariance = _parse_covariance(by_name["COVARIANCE"][0])
    for r in by_name.get("TABLE", []):
        cs.tables.append([(k, v) for k, v in options(r.text)])
    return cs


def _parse_model(record: Record):
    names, observed, dose = [], None, None
    text = record.text
    m = re.search(r"\bNCOMP(?:ARTMENTS|S)?\s*=\s*(\d+)", text, re.I)
    if m:
        names = [f"comp{i + 1}" for i in range(int(m.group(1)))]
    for i, g in enumerate(re.finditer(r"\bCOMP(?:ARTMENT)?\s*=?\s*\(([^)]*)\)", text, re.I)):
        words = [w for w in re.split(r"[\s,]+", g.group(1).strip()) if w]
        if not words:
            record.fail("COMP=() without a name")
        name = words[0].strip("'\"").lower()
        if not re.match(r"^[a-z][a-z0-9_]*$", name) or keyword.iskeyword(name):
            record.fail(f"compartment name '{words[0]}' is not usable as a name")
        for w in words[1:]:
            w = w.upper()
            if w in ("DEFDOSE", "DEFDOS"):
                dose = len(names) + 1
            elif w in ("DEFOBS", "DEFOBSERVATION"):
                observed = len(names) + 1
            elif w not in ("INITIALOFF", "NOOFF", "NODOSE", "EQUILIBRIUM", "EXCLUDE"):
                record.fail(f"the compartment option {w} is not supported")
        names.append(name)
    if not names:
        record.fail("no compartments (COMP=(NAME) or NCOMPARTMENTS=n)")
    return tuple(names), observed or 1, dose or 1


def _parse_estimation(record: Record) -> dict:
    est = {"method": "0", "interaction": False, "laplace": False, "maxeval": None, "posthoc": False,
           "line": record.line}
    for key, value in options(record.text):
        if key in ("METHOD", "METH"):
            v = (value or "").upper()
            if v in ("0", "ZERO"):
                est["method"] = "0"
            elif v in ("1", "COND", "CONDITIONAL"):
                est["method"] = "1"
            else:
                record.fail(f"METHOD={value} is not supported (pkmix: METHOD=0 (FO), 1/COND (FOCE), with "
                            f"INTERACTION, LAPLACIAN)")
        elif key in ("INTERACTION", "INTER"):
            est["interaction"] = True
        elif key in ("NOINTERACTION", "NOINTER"):
            est["interaction"] = False
        elif key in ("LAPLACIAN", "LAPLACE"):
            est["laplace"] = True
        elif key in ("MAXEVAL", "MAXEVALS", "MAX"):
            est["maxeval"] = int(float(value))
        elif key == "POSTHOC":
            est["posthoc"] = True
        elif key in ("NOPOSTHOC", "PRINT", "NOABORT", "SIG", "SIGDIG", "NSIG", "SIGL", "FORMAT", "FILE", "MSFO",
                     "NOTHETABOUNDTEST", "NOOMEGABOUNDTEST", "NOSIGMABOUNDTEST", "NOTBT", "NOOBT", "NOSBT",
                     "CTYPE", "SORT", "NOSORT", "NOPRIOR", "ABORT", "SLOW", "FAST", "NUMERICAL", "FNLETA",
                     "ETADER", "OPTMAP", "MCETA", "DELIM", "TOL", "ATOL", "CONDITIONAL"):
            continue
        else:
            record.fail(f"the option {key}{'=' + value if value else ''} is not supported")
    if est["method"] == "0" and est["interaction"]:
        record.fail("METHOD=0 (FO) cannot take INTERACTION")
    if est["laplace"]:
        est["pkmix_method"] = "laplace"
    else:
        est["pkmix_method"] = METHODS[(est["method"], est["interaction"])]
    return est


def _parse_covariance(record: Record) -> dict:
    cov = {"matrix": "sandwich"}
    for key, value in options(record.text):
        if key == "MATRIX":
            v = (value or "").upper()
            if v not in ("R", "S"):
                record.fail(f"MATRIX={value}: expected R or S")
            cov["matrix"] = v.lower()
        elif key in ("UNCONDITIONAL", "CONDITIONAL", "PRINT", "COMPRESS", "SLOW", "FAST", "NOFCOV", "SIGL",
                     "TOL", "ATOL", "SIGLO", "NOSLOW", "PRECOND", "PRECONDS", "PFCOND", "PRETYPE", "FPOSDEF",
                     "CHOLROFF", "KNUTHSUMOFF", "RESUME", "SPECIAL", "IACCEPT", "THBND", "OMITTED"):
            continue
        else:
            record.fail(f"the option {key} is not supported")
    return cov


# ---------------------------------------------------------------------- naming
def _pyname(name: str, taken: set) -> str:
    base = name.lower()
    if keyword.iskeyword(base) or base in _RESERVED_PY:
        base += "_"
    n = base
    i = 2
    while n in taken:
        n = f"{base}{i}"
        i += 1
    return n


def _plain(name: str) -> str:
    """A NONMEM variable's Python name; an IF condition's temporary _Cn becomes ifn."""
    return "IF" + name[2:] if name.startswith("_C") else name


def _first(expr, kind, n):
    found = []

    def visit(e):
        if e[0] == kind:
            found.append(e[1])
        elif e[0] not in ("num", "var", "theta", "eta", "eps", "a", "dadt"):
            for x in e[1:]:
                if isinstance(x, tuple):
                    visit(x)

    visit(expr)
    return n in found[:1]


def _parameter_names(cs: ControlStream, covariates: set):
    """Readable names: THETA(n) -> t<name> and ETA(n) -> eta_<name> after the $PK variable
    it defines (TVCL = THETA(1)*WT -> tcl; CL = TVCL*EXP(ETA(1)) -> eta_cl); otherwise
    theta<n> / eta<n>. EPS(n) -> eps<n>."""
    taken = {c.lower() for c in covariates} | _RESERVED_PY
    users: dict[str, str] = {}  # MU_n -> the variable computed from it
    for s in cs.pk:
        for v in C.symbols(s.value):
            if v[1].startswith("MU_") and not s.target[1].startswith("MU_"):
                users.setdefault(v[1], s.target[1])

    def owner(kind, n):
        for s in cs.pk:
            if s.target[0] == "var" and _first(s.value if s.value[0] != "where" else s.value[2], kind, n):
                name = s.target[1]
                if name.startswith("_C"):
                    continue
                name = users.get(name, name)
                if kind == "theta" and name.startswith("TV") and len(name) > 2:
                    name = name[2:]
                return name
        return None

    def named(kind, count, prefix):
        """``prefix + owner`` for each THETA/ETA (``kind``), else ``kind<n>``."""
        out = []
        for i in range(1, count + 1):
            o = owner(kind, i)
            cand = (prefix + o.lower()) if o else f"{kind}{i}"
            if not re.match(r"^[a-z][a-z0-9_]*$", cand) or cand in taken:
                cand = f"{kind}{i}"
            cand = _pyname(cand, taken)
            taken.add(cand)
            out.append(cand)
        return out

    thetas = named("theta", len(cs.thetas), "t")
    etas = named("eta", sum(b.size for b in cs.omegas), "eta_")
    n_eps = sum(b.size for b in cs.sigmas)
    eps = []
    for i in range(1, n_eps + 1):
        cand = _pyname(f"eps{i}", taken)
        taken.add(cand)
        eps.append(cand)
    return thetas, etas, eps


# ---------------------------------------------------------------------- code writer
_PREC = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5, "*": 6, "/": 6, "neg": 7, "**": 8}
_CALLS = {"EXP": "jnp.exp", "LOG": "jnp.log", "LOG10": "jnp.log10", "SQRT": "jnp.sqrt", "ABS": "jnp.abs",
          "SIN": "jnp.sin", "COS": "jnp.cos", "TAN": "jnp.tan", "ATAN": "jnp.arctan",
          "PHI": "jax.scipy.special.ndtr"}


def _num(v: float) -> str:
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v)}.0"
    return repr(v)


def py(e, leaf) -> str:
    """Python source of an expression; ``leaf(e)`` writes variables, THETA, ETA, EPS, A(n)."""

    def w(e, parent=0, right=False):
        k = e[0]
        if k == "num":
            s = _num(e[1])
            return f"({s})" if e[1] < 0 else s
        if k in ("var", "theta", "eta", "eps", "a", "dadt"):
            return leaf(e)
        if k == "call":
            return f"{_CALLS[e[1]]}({w(e[2])})"
        if k == "where":
            return f"jnp.where({w(e[1])}, {w(e[2])}, {w(e[3])})"
        if k == "and":
            return f"jnp.logical_and({w(e[1])}, {w(e[2])})"
        if k == "or":
            return f"jnp.logical_or({w(e[1])}, {w(e[2])})"
        if k == "not":
            return f"jnp.logical_not({w(e[1])})"
        p = _PREC[k]
        if k == "cmp":
            s = f"{w(e[2], 5)} {e[1]} {w(e[3], 5)}"
            return f"({s})"
        if k == "neg":
            s = f"-{w(e[1], p)}"
        elif k == "**":
            s = f"{w(e[1], p + 1)} ** {w(e[2], p)}"
        else:
            s = f"{w(e[1], p)} {k} {w(e[2], p, True)}"
        need = p < parent or (right and p == parent and k in ("+", "-", "*", "/")) or (k == "neg" and parent >= 6)
        return f"({s})" if need else s

    return w(e)


# ---------------------------------------------------------------------- translation
@dataclass
class Translation:
    source: str
    method: str
    covariance: str
    data_columns: list[str]
    covariates: list[str]
    names: dict


def _fail_at(record: Record | None, line: int, message: str):
    if record is None:
        raise ControlStreamError(message)
    record.fail(message, line)


def translate(cs: ControlStream, *, data_path: str | None = None) -> Translation:
    rec_pk, rec_err, rec_des = cs.record("PK"), cs.record("ERROR"), cs.record("DES")
    pred = cs.pred_f is not None
    if pred:
        rec_pk = rec_err = cs.record("PRED")
    labels = {it.label: it for it in cs.input if not it.drop}
    aliases = {it.alias: it.label for it in cs.input if not it.drop and it.alias}

    def data_item(name):
        return aliases.get(name, name) if (name in labels or name in aliases) else None

    comps = cs.compartments
    n_cmt = len(comps)
    ode = cs.advan in (6, 13)

    # What the model needs from $PK.
    pk_assigned = {s.target[1] for s in cs.pk if s.target[0] == "var"}
    for s in cs.pk:
        if s.target[0] != "var":
            _fail_at(rec_pk, s.line, "DADT(n) belongs in $DES")
        if s.target[1] in SPECIAL:
            _fail_at(rec_pk, s.line, f"{s.target[1]} is not supported")
        m = re.match(r"^(S|F|ALAG|R|D)(\d+)$", s.target[1])
        if m and not pred and not 1 <= int(m.group(2)) <= n_cmt:
            _fail_at(rec_pk, s.line, f"{s.target[1]}: the model has {n_cmt} compartments")
    structural = {}
    if not ode and not pred:
        structural = ADVANS[cs.advan][3][cs.trans]
        for pkname, expr in structural.items():
            for v in C.symbols(expr):
                if v[1] not in pk_assigned:
                    _fail_at(rec_pk, rec_pk.line, f"ADVAN{cs.advan} TRANS{cs.trans} needs {v[1]}, which $PK does "
                                                  f"not assign")
    modifiers = {}
    for n in range(1, 0 if pred else n_cmt + 1):
        for prefix in ("F", "ALAG", "R", "D"):
            if f"{prefix}{n}" in pk_assigned:
                modifiers[f"{prefix.lower()}{n}"] = _v(f"{prefix}{n}")
    scale = f"S{cs.observed}" if not pred and f"S{cs.observed}" in pk_assigned else None

    # $ERROR: Y and the statements it needs.
    for s in cs.error:
        if s.target[0] != "var":
            _fail_at(rec_err, s.line, "only variables can be assigned in $ERROR")
        if s.target[1] in SPECIAL:
            _fail_at(rec_err, s.line, f"{s.target[1]} is not supported")
    if ("var", "Y") not in {s.target for s in cs.error}:
        _fail_at(rec_err, rec_err.line, "Y is never assigned")
    err_code = C.needed(cs.error, {("var", "Y")})
    y_line = max(s.line for s in err_code if s.target == ("var", "Y"))
    err_assigned = set()
    pk_exports = {cs.pred_f} if pred else set()
    err_etas = set()  # ETA(n) read in $ERROR: individual() returns them
    uses_f = False
    for s in err_code:
        for leaf in C.symbols(s.value, ("var", "eta", "a")):
            if leaf[0] == "eta":
                err_etas.add(leaf[1])
            if leaf[0] == "a" and not 1 <= leaf[1] <= n_cmt:
                _fail_at(rec_err, s.line, f"A({leaf[1]}): the model has {n_cmt} compartments")
            if leaf[0] != "var" or leaf in err_assigned:
                continue
            name = leaf[1]
            if name == "F":
                uses_f = True
            elif name.startswith("_C"):
                continue
            elif name in pk_assigned:
                pk_exports.add(name)
            elif data_item(name):
                if data_item(name) in RESERVED and data_item(name) != "TIME":
                    _fail_at(rec_err, s.line, f"the residual error model reads the data item {name}; pkmix "
                                              f"cannot (only covariates)")
            elif name in SPECIAL or name in ("T", "DV"):
                _fail_at(rec_err, s.line, f"{name} in $ERROR is not supported")
            else:
                _fail_at(rec_err, s.line, f"{name} is used before it is assigned (not a $PK variable nor a "
                                          f"data item)")
        err_assigned.add(s.target)

    # $DES
    des_assigned = set()
    if ode:
        dadt = {s.target[1] for s in cs.des if s.target[0] == "dadt"}
        for n in dadt:
            if not 1 <= n <= n_cmt:
                _fail_at(rec_des, rec_des.line, f"DADT({n}): $MODEL has {n_cmt} compartments")
        for s in cs.des:
            for leaf in C.symbols(s.value, ("var", "eta", "a")):
                if leaf[0] == "eta":
                    _fail_at(rec_des, s.line, "ETA in $DES is not supported: assign it to a variable in $PK")
                if leaf[0] == "a" and not 1 <= leaf[1] <= n_cmt:
                    _fail_at(rec_des, s.line, f"A({leaf[1]}): the model has {n_cmt} compartments")
                if leaf[0] != "var" or leaf in des_assigned or leaf[1] in ("T",) or leaf[1].startswith("_C"):
                    continue
                if leaf[1] in pk_assigned:
                    pk_exports.add(leaf[1])
                else:
                    _fail_at(rec_des, s.line, f"{leaf[1]} is used in $DES but not assigned in $PK or before it")
            des_assigned.add(s.target)

    wanted = {_v(n) for e in structural.values() for v in [C.symbols(e)] for n in [x[1] for x in v]}
    wanted |= {e for e in modifiers.values()} | {_v(n) for n in pk_exports}
    if scale:
        wanted.add(_v(scale))
    pk_code = C.needed(cs.pk, wanted)
    pk_code, iov = _occasion_etas(cs, pk_code, wanted, data_item, rec_pk)

    covariates: list[str] = []
    pk_defined = set()
    for s in pk_code:
        for leaf in C.symbols(s.value, ("var", "eps", "a")):
            if leaf[0] == "eps":
                _fail_at(rec_pk, s.line, "EPS in $PK is not supported")
            if leaf[0] == "a":
                _fail_at(rec_pk, s.line, "A(n) in $PK is not supported")
            if leaf in pk_defined or leaf[1].startswith(("_C", "__IOV_", "__CHOL_")):
                continue
            name = leaf[1]
            item = data_item(name)
            if item is None:
                if name in SPECIAL:
                    _fail_at(rec_pk, s.line, f"{name} is not supported")
                _fail_at(rec_pk, s.line, f"{name} is used before it is assigned and is not a data item in $INPUT")
            if item == "TIME":
                continue  # the record's time, p.TIME
            if item in RESERVED:
                _fail_at(rec_pk, s.line, f"the individual parameters read the data item {name} ({item}); pkmix "
                                         f"passes only covariates and TIME to them (AMT, DV ... drive the dosing)")
            if item not in covariates:
                covariates.append(item)
        pk_defined.add(s.target)

    theta_names, eta_names, eps_names = _parameter_names(cs, set(covariates))
    zero_eps = {e: ("num", 0.0) for st in err_code for e in C.symbols(st.value, ("eps",))}
    # The residual error: Y as a function of the prediction, THETAs and EPS.
    y_full = C.simplify(C.inline(err_code, ("var", "Y")))
    y0 = C.simplify(C.substitute(y_full, zero_eps))
    f_sym = ("var", "__PRED")
    y_err = C.simplify(C.substitute(y_full, {y0: f_sym}))
    # The residual error may read $PK variables and ETAs (as individual parameters), not
    # data items or amounts.
    err_individual = sorted({v[1] for v in C.symbols(y_err) if v != f_sym and v[1] in pk_exports})
    err_individual_etas = sorted({v[1] for v in C.symbols(y_err, ("eta",))})
    others = sorted({v[1] for v in C.symbols(y_err) if v != f_sym and v[1] not in pk_exports}
                    | {f"A({v[1]})" for v in C.symbols(y_err, ("a",))})
    if others:
        _fail_at(rec_err, y_line, "the residual error of Y depends on " + ", ".join(others) + " besides the "
                 "prediction, THETAs, ETAs and $PK variables; pkmix's error models read only those")
    eps_used = sorted({v[1] for v in C.symbols(y_err, ("eps",))})
    if not eps_used:
        _fail_at(rec_err, y_line, "Y has no EPS(n): there is no residual error")
    err_thetas = sorted({v[1] for v in C.symbols(y_err, ("theta",))})
    # A THETA that only scales the residual error is named by what it does (add_sd, prop_sd).
    pk_thetas = {v[1] for st in pk_code + cs.des for v in C.symbols(st.value, ("theta",))}
    for i in err_thetas:
        if i in pk_thetas or theta_names[i - 1] != f"theta{i}":
            continue
        kind = _error_theta_kind(y_err, i, err_thetas, f_sym)
        if kind and kind not in theta_names:
            theta_names[i - 1] = kind
    # An ETA whose variance is 0 FIX is 0 (NONMEM's way to switch one off): left out.
    zero_etas, k = set(), 0
    for b in cs.omegas:
        if not b.block:
            zero_etas |= {k + j + 1 for j, (v, f) in enumerate(zip(b.values, b.fixed)) if v == 0 and f}
        k += b.size
    if zero_etas:
        off = {("eta", n): ("num", 0.0) for n in zero_etas}
        pk_code = [C.Flat(s.target, C.simplify(C.substitute(s.value, off)), s.line) for s in pk_code]
    for s in pk_code + err_code + cs.des:
        for leaf in C.symbols(s.value, ("theta", "eta", "eps")):
            pool = {"theta": theta_names, "eta": eta_names, "eps": eps_names}[leaf[0]]
            if leaf[1] > len(pool):
                rec = rec_pk if s in pk_code else rec_err if s in err_code else rec_des
                what = {"theta": "$THETA", "eta": "$OMEGA", "eps": "$SIGMA"}[leaf[0]]
                _fail_at(rec, s.line, f"{leaf[0].upper()}({leaf[1]}): {what} declares {len(pool)}")

    # Python names of $PK variables (locals in individual) and what individual returns.
    taken = set(theta_names) | set(eta_names) | set(eps_names) | {c.lower() for c in covariates}
    local: dict[str, str] = {}
    for s in pk_code:
        if s.target[1] not in local:
            local[s.target[1]] = _pyname(_plain(s.target[1]), taken | set(local.values()))
    returned: dict[str, tuple] = {}
    returned.update(structural)
    returned.update(modifiers)
    # An ETA read in $ERROR is returned under its own name (observe sees etas as 0).
    eta_key = {n: eta_names[n - 1] for n in sorted(err_etas)}
    returned.update({key: ("eta", n) for n, key in eta_key.items()})
    export_key: dict[str, str] = {}
    for name in sorted(pk_exports | ({scale} if scale else set())):
        key = name.lower()
        if key in returned and returned[key] != _v(name) or key in _RESERVED_PY or keyword.iskeyword(key):
            key = "nm_" + key
        returned[key] = _v(name)
        export_key[name] = key

    def indexed(e, kinds):
        """THETA(n), ETA(n), EPS(n) or A(n), those of ``kinds`` (what the section may read), as the
        model file names them."""
        if e[0] not in kinds:
            raise AssertionError(e)
        if e[0] == "a":
            return f"a.{comps[e[1] - 1]}"
        if e[0] == "eps":
            return f"eps.{eps_names[e[1] - 1]}"
        return f"p.{(theta_names if e[0] == 'theta' else eta_names)[e[1] - 1]}"

    def pk_leaf(e):
        if e[0] == "var" and e[1].startswith("__IOV_"):
            return f"p.{e[1][6:]}"
        if e[0] == "var" and e[1].startswith("__CHOL_"):
            return f"p.{e[1][7:]}"
        if e[0] == "var":
            if e in pk_defined_now:
                return local[e[1]]
            return f"p.{data_item(e[1])}"
        return indexed(e, ("theta", "eta"))

    lines = []
    lines.append("def individual(p):")
    lines.append('    """$PK: the individual parameters (NONMEM names in lower case)."""')
    pk_defined_now = set()
    for s in pk_code:
        code = py(s.value, pk_leaf)
        pk_defined_now.add(s.target)
        lines.append(f"    {local[s.target[1]]} = {code}")
    lines.append("    return {")
    for key, expr in returned.items():
        note = ""
        if key in structural and expr != _v(key.upper()):
            note = f"  # {key}: {_nm(expr)}"
        lines.append(f'        "{key}": {py(expr, pk_leaf)},{note}')
    lines.append("    }")
    pk_src = "\n".join(lines)

    # observe: $ERROR with EPS = 0
    obs_code = [C.Flat(s.target, C.simplify(C.substitute(s.value, zero_eps)), s.line) for s in err_code]
    obs_code = C.needed(obs_code, {("var", "Y")})
    err_local: dict[str, str] = {}
    obs_taken = set(export_key.values()) | {"f", "a", "p"}
    for s in obs_code:
        if s.target[1] not in err_local:
            err_local[s.target[1]] = _pyname(_plain(s.target[1]), obs_taken | set(err_local.values()))

    def err_leaf_factory(defined):
        def leaf(e):
            if e[0] == "var":
                if e in defined:
                    return err_local[e[1]]
                if e[1] == "F":
                    return "f"
                if e[1] in export_key:
                    return f"p.{export_key[e[1]]}"
                return f"p.{data_item(e[1])}"
            if e[0] == "eta":
                return f"p.{eta_key[e[1]]}"
            return indexed(e, ("theta", "a", "eps"))
        return leaf

    lines = ["def observe(a, p):", f'    """${"PRED" if pred else "ERROR"} at EPS = 0: the prediction."""']
    if pred:
        lines = ["def observe(a, p):", '    """$PRED\'s Y at EPS = 0: the prediction (no compartments)."""',
                 f"    return p.{export_key[cs.pred_f]}"]
        obs_code = []
    elif uses_f or any(("var", "F") in C.symbols(s.value) for s in obs_code):
        obs_cmt = comps[cs.observed - 1]
        f_expr = f"a.{obs_cmt} / p.{export_key[scale]}" if scale else f"a.{obs_cmt}"
        lines.append(f"    f = {f_expr}  # F = A({cs.observed})" + (f"/{scale}" if scale else ""))
    defined = set()
    for s in obs_code:
        code = py(s.value, err_leaf_factory(defined))
        defined.add(s.target)
        lines.append(f"    {err_local[s.target[1]]} = {code}")
    if not pred:
        lines.append(f"    return {err_local['Y']}")
    obs_src = "\n".join(lines)


    def y_leaf(e):
        if e == f_sym:
            return "f"
        if e[0] == "var":
            return f"p.{export_key[e[1]]}"
        if e[0] == "eta":
            return f"p.{eta_key[e[1]]}"
        return indexed(e, ("theta", "eps"))

    y_text = " ".join(ln.code.strip() for ln in rec_err.lines if ln.number == y_line)
    if pred:
        y_text = f"$PRED's Y (line {y_line}) with F its value at EPS = 0"
    reads_ip = ", individual parameters" if err_individual or err_individual_etas else ""
    err_src = "\n".join([
        "def y(f, p, eps):",
        f'    """{y_text.strip()} as a function of the prediction f, THETAs{reads_ip} and EPS."""',
        f"    return {py(y_err, y_leaf)}",
    ])

    # $DES
    des_src = ""
    if ode:
        des_local = {}
        for s in cs.des:
            if s.target[0] == "var" and s.target[1] not in des_local:
                des_local[s.target[1]] = _pyname(_plain(s.target[1]), set(des_local.values()) | {"t", "a", "p"})
        defined = set()

        def des_leaf(e):
            if e[0] == "var":
                if e in defined:
                    return des_local[e[1]]
                if e[1] == "T":
                    return "t"
                return f"p.{export_key[e[1]]}"
            if e[0] == "dadt":
                return f"dadt_{e[1]}"
            return indexed(e, ("a", "theta"))

        lines = ["def des(t, a, p):", '    """$DES: the amounts\' derivatives."""']
        for s in cs.des:
            for leaf in C.symbols(s.value, ("theta",)):
                _fail_at(rec_des, s.line, "THETA in $DES is not supported: assign it to a variable in $PK")
            code = py(s.value, des_leaf)
            defined.add(s.target)
            name = des_local[s.target[1]] if s.target[0] == "var" else f"dadt_{s.target[1]}"
            lines.append(f"    {name} = {code}")
        dadts = sorted({s.target[1] for s in cs.des if s.target[0] == "dadt"})
        lines.append("    return {" + ", ".join(f'"{comps[n - 1]}": dadt_{n}' for n in dadts) + "}")
        des_src = "\n".join(lines)

    # Parameters
    used_thetas = {v[1] for st in pk_code + err_code + cs.des for v in C.symbols(st.value, ("theta",))}
    unused_thetas = [i + 1 for i, t in enumerate(cs.thetas) if i + 1 not in used_thetas and not t.fixed]

    def theta_decl(i, t):
        args = [_num(t.init)]
        if not math.isinf(t.lower):
            args.append(f"lower={_num(t.lower)}")
        if not math.isinf(t.upper):
            args.append(f"upper={_num(t.upper)}")
        if t.fixed:
            args.append("fixed=True")
        text = f"pkmix.Theta({', '.join(args)})" if len(args) > 1 else args[0]
        note = f"  # THETA({i + 1})" + (f" {t.comment}" if t.comment else "")
        if i + 1 in unused_thetas:
            note += " -- not used by the model (fix it or remove it before a fit)"
        return f'        "{theta_names[i]}": {text},{note}'

    theta_src = "\n".join(theta_decl(i, t) for i, t in enumerate(cs.thetas))
    for g in iov:
        for name, value, fixed, diagonal in g.get("cholesky", ()):
            bound = ", lower=0.0" if diagonal else ""
            theta_src += (f'\n        "{name}": pkmix.Theta({_num(round(value, 12))}{bound}'
                          f'{", fixed=True" if fixed else ""}),  # Cholesky factor of the IOV BLOCK(n) '
                          f'(OMEGA = L L\')')
    omega_items = []
    k = 0
    iov_etas = {n for g in iov for n in g["etas"]}
    for b in cs.omegas:
        if k + 1 in iov_etas:
            k += b.size
            continue
        if b.block:
            names = eta_names[k:k + b.size]
            fixed = ", fixed=True" if b.fixed[0] else ""
            vals = ", ".join(_num(v) for v in b.values)
            etas = ", ".join(f"ETA({k + j + 1})" for j in range(b.size))
            omega_items.append(f"        pkmix.Block({names!r}, [{vals}]{fixed}),  # BLOCK({b.size}) {etas}")
        else:
            entries = []
            for j, (v, f, c) in enumerate(zip(b.values, b.fixed, b.comments)):
                if k + j + 1 in zero_etas:
                    omega_items.append(f"        # ETA({k + j + 1}) is 0 FIX: left out")
                    continue
                if v == 0 and not f:
                    raise ControlStreamError(f"$OMEGA (line {b.line}): OMEGA({k + j + 1}) is 0; give a positive "
                                             f"variance")
                val = f"pkmix.Eta({_num(v)}, fixed=True)" if f else _num(v)
                entries.append(f'"{eta_names[k + j]}": {val}')
                omega_items.append(f"        {{{entries[-1]}}},  # ETA({k + j + 1})" + (f" {c}" if c else ""))
        k += b.size
    sigma_items = []
    correlations = []  # (eps i, eps j, the theta that is their correlation)
    k = 0
    for b in cs.sigmas:
        if b.block:
            # BLOCK(2): the variances as sigmas, the covariance as a correlation theta.
            s11, s21, s22 = b.values
            if not (s11 > 0 and s22 > 0 and s21**2 < s11 * s22):
                raise ControlStreamError(f"$SIGMA (line {b.line}): the BLOCK(2) is not positive definite")
            fx = ", fixed=True" if b.fixed[0] else ""
            for j, v in ((0, s11), (1, s22)):
                sigma_items.append(f'        "{eps_names[k + j]}": pkmix.Variance({_num(v)}{fx}),  # EPS({k + j + 1}), '
                                   f'BLOCK(2)')
            name = f"rho_{eps_names[k]}_{eps_names[k + 1]}"
            correlations.append((eps_names[k], eps_names[k + 1], name))
            theta_src += (f'\n        "{name}": pkmix.Theta({_num(round(s21 / math.sqrt(s11 * s22), 12))}, '
                          f'lower=-1.0, upper=1.0{fx}),  # SIGMA({k + 2},{k + 1}) as a correlation: '
                          f'SIGMA({k + 2},{k + 1}) = {name}*SQRT(SIGMA({k + 1},{k + 1})*SIGMA({k + 2},{k + 2}))')
            k += 2
            continue
        for j, (v, f, c) in enumerate(zip(b.values, b.fixed, b.comments)):
            if not v > 0:
                raise ControlStreamError(f"$SIGMA (line {b.line}): SIGMA({k + j + 1}) is {v}; give a positive "
                                         f"variance")
            fx = ", fixed=True" if f else ""
            sigma_items.append(f'        "{eps_names[k + j]}": pkmix.Variance({_num(v)}{fx}),  # EPS({k + j + 1})'
                               + (f" {c}" if c else ""))
        k += b.size
    unused_eps = [eps_names[i] for i in range(len(eps_names)) if i + 1 not in eps_used]
    if unused_eps:
        raise ControlStreamError(f"$ERROR (line {y_line}): Y does not use {', '.join(unused_eps).upper()} "
                                 f"declared in $SIGMA")

    if ode:
        dose = f', default_dose="{comps[cs.default_dose - 1]}"' if cs.default_dose != 1 else ""
        tol = f", rtol=1e-{cs.tol}" if cs.tol else ""
        structure = f"pkmix.ODE({list(comps)!r}, des{dose}{tol})"
    elif pred:
        structure = None
    else:
        structure = ADVANS[cs.advan][2]

    est = cs.estimation or {"pkmix_method": "focei"}
    method = est.get("pkmix_method", "focei")
    covariance = (cs.covariance or {}).get("matrix", "sandwich") if cs.covariance is not None else "none"

    # Data
    # A $PRED model doses nothing: of the reserved items only ID, TIME, DV and MDV matter.
    passed = ("ID", "TIME", "DV", "MDV") if pred else PASSED
    used = [it.label for it in cs.input if not it.drop and it.label in passed]
    for it in cs.input:
        if not it.drop and it.label in RESERVED and it.label not in PASSED:
            raise ControlStreamError(f"$INPUT: the data item {it.label} is not supported; DROP it")
    data_columns = used + [c for c in covariates if c not in used]
    if iov and iov[0]["column"] not in data_columns:
        data_columns.append(iov[0]["column"])
    origin = cs.path.name if cs.path else "the control stream"
    header = [f'"""{cs.problem or "NONMEM model"}: imported from {origin} by pkmix import.',
              "",
              ("$PRED (no compartments)" if pred else f"$SUBROUTINES ADVAN{cs.advan} TRANS{cs.trans}")
              + f"; estimation {method}"
              + ("" if covariance == "none" else f", covariance {covariance}") + ".",
              *[f"Not run: {e}" for e in est.get("skipped", [])],
              *([f"Not used by the model (only by code that feeds nothing it needs): "
                 + ", ".join(f"THETA({i})" for i in unused_thetas)
                 + "; their estimates are undetermined."] if unused_thetas else []),
              "Names: " + ", ".join(f"THETA({i + 1}) -> {n}" for i, n in enumerate(theta_names))
              + "; " + ", ".join([f"ETA({i + 1}) -> {n}" for i, n in enumerate(eta_names)
                                  if i + 1 not in iov_etas and i + 1 not in zero_etas]
                                 + [f"{_eta_list(g['etas'])} -> {g['name']} (IOV)" for g in iov])
              + "; " + ", ".join(f"EPS({i + 1}) -> {n}" for i, n in enumerate(eps_names)) + ".",
              '"""', ""]
    src = "\n".join(header) + "\n".join([
        "from pathlib import Path",
        "",
        *(["import jax"] if "jax.scipy" in pk_src + obs_src + err_src + des_src else []),
        "import jax.numpy as jnp",
        "",
        "import pkmix",
        "from pkmix import nonmem",
        "",
        "",
        pk_src,
        "",
        "",
        obs_src,
        "",
        "",
        err_src,
        "",
        "",
        "",
    ]) + (des_src + "\n\n\n" if des_src else "") + "\n".join([
        "model = pkmix.Model(",
        f"    name={(cs.path.stem if cs.path else 'nonmem')!r},",
        "    theta={",
        theta_src,
        "    },",
        "    omega=[",
        *omega_items,
        "    ],",
        "    sigma={",
        *sigma_items,
        "    },",
        *([f"    iov=pkmix.IOV(occasion={iov[0]['column']!r}"
            + "".join(f", {g['name']}={_num(g['variance'])}" for g in iov)
            + (", fixed=True" if iov[0]["fixed"] else "") + "),  # "
            + "; ".join(f"{_eta_list(g['etas'])} by {g['column']} = 1..{len(g['etas'])}"
                        for g in iov)] if iov else []),
        f"    covariates={covariates!r},",
        "    individual=individual,",
        *([f"    structure={structure},"] if structure else []),
        "    observe=observe,",
        f"    error=nonmem.eps_error(y, eps={[eps_names[i - 1] for i in eps_used]!r}, "
        f"theta={[theta_names[i - 1] for i in err_thetas]!r}"
        + (", correlations={" + ", ".join(f"({a!r}, {b!r}): {r!r}" for a, b, r in correlations) + "}"
           if correlations else "")
        + (f", individual={[export_key[n] for n in err_individual] + [eta_key[n] for n in err_individual_etas]!r}"
           if err_individual or err_individual_etas else "") + "),",
        ")",
        "",
        f"ESTIMATION = {{\"method\": {method!r}, \"covariance\": {covariance!r}, "
        f"\"maxeval\": {est.get('maxeval')!r}}}",
        "",
    ])
    if cs.data is not None:
        spec = cs.data
        input_line = " ".join((it.label + (f"={it.alias}" if it.alias else "")) if not it.drop else
                              (f"{it.label}=DROP" if it.label not in ("DROP", "SKIP") else it.label)
                              for it in cs.input)
        file = data_path or spec.file
        src += "\n".join([
            "",
            "def load_data():",
            f'    """$DATA {spec.file} as NM-TRAN reads it with $INPUT {input_line}."""',
            f"    return nonmem.read_data_file(Path(__file__).parent / {file!r}, {_input_src(cs.input)},",
            f"                                 {_spec_src(spec)}, columns={data_columns!r}"
            + (f",\n                                 occasions=({iov[0]['column']!r}, {len(iov[0]['etas'])})"
               if iov else "") + ("" if pred else f", observed={cs.observed}") + ")",
            "",
        ])
    names = {"theta": theta_names, "eta": eta_names, "eps": eps_names}
    return Translation(src, method, covariance, data_columns, covariates, names)


def _eta_list(etas):
    """ETA(4)-ETA(6) for consecutive etas, else ETA(4), ETA(6)."""
    if etas == list(range(etas[0], etas[-1] + 1)):
        return f"ETA({etas[0]})-ETA({etas[-1]})"
    return ", ".join(f"ETA({n})" for n in etas)


def _occasion_etas(cs: ControlStream, pk_code, wanted, data_item, rec_pk):
    """Inter-occasion variability: ``$OMEGA BLOCK(1) v`` followed by ``BLOCK(1) SAME``
    records is one variance shared by n etas, and the $PK variable that picks the
    record's occasion's eta (``IF (OCC.EQ.1) IOV=ETA(3)`` ..., or ``IOV=Q1*ETA(3)+Q2*ETA(4)``
    with indicators) becomes a ``pkmix.IOV`` eta. The variable is recognised by
    evaluating it for OCC = 1..n: it must be ETA(k + OCC - 1) exactly."""
    groups, k, records = [], 0, [r for r in cs.records if r.name == "OMEGA"]
    for r, b in zip(records, cs.omegas):
        if b.same:
            if not groups or groups[-1]["end"] != k or groups[-1]["size"] != b.size:
                r.fail("SAME must follow a BLOCK(n) of the same size")
            groups[-1]["etas"].append(k + 1)
            groups[-1]["end"] = k + b.size
        else:
            groups.append({"etas": [k + 1], "end": k + b.size, "size": b.size if b.block else None,
                           "variance": b.values[0], "fixed": bool(b.fixed[0]), "record": r, "values": b.values})
        k += b.size
    groups = [g for g in groups if len(g["etas"]) > 1]
    # A BLOCK(n) SAME group (n correlated etas per occasion, OMEGA = L L') becomes n
    # groups of independent etas u_1 .. u_n of variance 1 FIX, read as L u: the j-th
    # occasion eta is sum_{i <= j} L[j, i] u_i, with L's elements as thetas.
    expanded = []
    for g in groups:
        if not g["size"] or g["size"] < 2:
            expanded.append(g)
            continue
        size = g["size"]
        lower = np.zeros((size, size))
        lower[np.tril_indices(size)] = g["values"]
        omega = lower + np.tril(lower, -1).T
        try:
            chol = np.linalg.cholesky(omega)
        except np.linalg.LinAlgError:
            g["record"].fail(f"the BLOCK({size}) is not positive definite")
        for j in range(size):
            expanded.append(dict(g, etas=[n + j for n in g["etas"]], variance=1.0, fixed=True,
                                 block=(j, chol, bool(g["fixed"]))))
    groups = expanded
    if not groups:
        return pk_code, []
    code = list(pk_code)
    out = []
    taken = set()
    block_names = []  # the IOV names of the BLOCK(n) SAME group being read, in order
    for g in groups:
        etas = set(g["etas"])
        carriers = []
        for i, s in enumerate(code):
            if {e[1] for e in C.symbols(s.value, ("eta",))} & etas:
                carriers.append(i)
        if not carriers:
            continue  # no statement uses them: the OMEGA is unused, as in NONMEM
        target = code[carriers[-1]].target
        last = max(i for i, s in enumerate(code) if s.target == target)
        value = C.inline(code[:last + 1], target)
        items = {v[1] for v in C.symbols(value) if not v[1].startswith("_C")}
        if len(items) != 1 or data_item(next(iter(items))) is None:
            g["record"].fail(f"the etas {', '.join(f'ETA({n})' for n in g['etas'])} (BLOCK({g['size'] or 1}) SAME) "
                             f"must be picked "
                             f"by an occasion column in $PK, e.g. IF (OCC.EQ.1) IOV=ETA({g['etas'][0]})")
        column = next(iter(items))
        sentinel = {n: 1000.0 + j for j, n in enumerate(g["etas"])}
        for j, n in enumerate(g["etas"]):
            got = _evaluate(value, {("var", column): float(j + 1)}, sentinel)
            if got != sentinel[n]:
                rec_pk.fail(f"{target[1]} is not ETA({n}) when {column} = {j + 1}: pkmix reads inter-occasion "
                            f"etas as ETA(k + {column} - 1) (BLOCK(1) SAME)", code[last].line)
        for i, s in enumerate(code[:last]):
            if target in C.symbols(s.value) and s.target != target:
                rec_pk.fail(f"{target[1]} is used before its last assignment", s.line)
        code = [s for s in code if s.target != target]
        users = [s.target[1] for s in code if target in C.symbols(s.value) and not s.target[1].startswith("_C")]
        name = _pyname("kappa_" + (users[0] if users else target[1]).lower(), taken)
        taken.add(name)
        leaf = ("var", "__IOV_" + name)
        if g.get("block"):
            # Column j of L: its diagonal l_<name_j> and, below it, l_<name_j>_<k+1> = L[k, j];
            # the eta reads the columns before it at its own row.
            j, lower, fixed = g["block"]
            block_names = block_names[:j]
            if len(block_names) != j:
                g["record"].fail(f"an earlier eta of the BLOCK({lower.shape[0]}) SAME is not used in $PK")
            block_names.append(name)
            chol = [(f"l_{name}", float(lower[j, j]), fixed, True)]
            chol += [(f"l_{name}_{k + 1}", float(lower[k, j]), fixed, False) for k in range(j + 1, lower.shape[0])]
            leaf = ("*", ("var", "__CHOL_" + chol[0][0]), leaf)
            for i, earlier in enumerate(block_names[:j]):
                leaf = ("+", ("*", ("var", f"__CHOL_l_{earlier}_{j + 1}"), ("var", "__IOV_" + earlier)), leaf)
            g = dict(g, cholesky=chol)
        code = [C.Flat(s.target, C.substitute(s.value, {target: leaf}), s.line) for s in code]
        out.append(dict(g, column=data_item(column), name=name))
    # what the carriers needed (indicators) is dead now
    code = C.needed(code, wanted)
    left = {e[1] for s in code for e in C.symbols(s.value, ("eta",))} & {n for g in out for n in g["etas"]}
    if left:
        rec_pk.fail(f"ETA({min(left)}) (an inter-occasion eta) is used outside its occasion variable")
    if len({g["column"] for g in out}) > 1 or len({len(g["etas"]) for g in out}) > 1:
        rec_pk.fail("inter-occasion etas on different occasion columns or numbers of occasions are not supported")
    if len({g["fixed"] for g in out}) > 1:
        rec_pk.fail("inter-occasion variances that are partly FIX are not supported")
    return code, out


def _error_theta_kind(y_err, i, err_thetas, f_sym):
    """'add_sd' when THETA(i) alone makes dY/dEPS constant in the prediction, 'prop_sd' when
    proportional to it (the other error THETAs at 0), else None."""
    def slope(f):
        values = {("theta", n): float(n == i) for n in err_thetas}
        env = {f_sym: f}
        h = 1e-3
        up = _evaluate(y_err, env, {}, {**values, **{("eps", n): h for n in range(1, 100)}})
        down = _evaluate(y_err, env, {}, {**values, **{("eps", n): -h for n in range(1, 100)}})
        return (up - down) / (2 * h)
    try:
        d1, d2 = slope(1.0), slope(2.0)
    except (ArithmeticError, ValueError, ControlStreamError):
        return None
    if not (math.isfinite(d1) and math.isfinite(d2)) or abs(d1) < 1e-12:
        return None
    if abs(d2 - d1) < 1e-6 * abs(d1):
        return "add_sd"
    if abs(d2 - 2 * d1) < 1e-6 * abs(d1):
        return "prop_sd"
    return None


def _evaluate(e, env, etas, leaves=None):
    """A numeric value of an expression (IOV and error-THETA recognition): ``env`` gives
    variables, ``etas`` the etas by number (others 0), ``leaves`` THETA/EPS values by
    ``("theta", n)`` (others 1 and 0)."""
    if leaves is not None and e in leaves:
        return leaves[e]
    k = e[0]
    if k == "num":
        return e[1]
    if k == "var":
        if e not in env:
            raise ControlStreamError(f"{e[1]} has no value here")
        return env[e]
    if k == "eta":
        return etas.get(e[1], 0.0)
    if k == "eps":
        return 0.0 if leaves is not None else 1.0
    if k in ("theta", "a"):
        return 1.0
    a = [_evaluate(x, env, etas, leaves) for x in e[1:] if isinstance(x, tuple)]
    if k == "neg":
        return -a[0]
    if k in ("+", "-", "*", "/", "**"):
        x, y = a
        return {"+": x + y, "-": x - y, "*": x * y, "/": x / y if y else math.inf, "**": x ** y}[k]
    if k == "cmp":
        x, y = a
        return float({"==": x == y, "!=": x != y, ">": x > y, ">=": x >= y, "<": x < y, "<=": x <= y}[e[1]])
    if k == "and":
        return float(bool(a[0]) and bool(a[1]))
    if k == "or":
        return float(bool(a[0]) or bool(a[1]))
    if k == "not":
        return float(not a[0])
    if k == "where":
        return a[1] if a[0] else a[2]
    if k == "call":
        return {"EXP": math.exp, "LOG": math.log, "SQRT": math.sqrt, "ABS": abs}.get(e[1], lambda v: math.nan)(a[0])
    return math.nan


def _input_src(items):
    return "[" + ", ".join(f"({it.label!r}, {it.alias!r}, {it.drop!r})" for it in items) + "]"


def _spec_src(spec: DataSpec):
    ign = [(c.column, c.op, c.value) for c in spec.ignore]
    acc = [(c.column, c.op, c.value) for c in spec.accept]
    return f"ignore_char={spec.ignore_char!r}, ignore={ign!r}, accept={acc!r}"


def _nm(expr) -> str:
    """NONMEM spelling of a small expression (for comments)."""
    return py(expr, lambda e: e[1] if e[0] == "var" else str(e)).replace(".0", "")

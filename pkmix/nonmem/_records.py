"""NM-TRAN control streams: records, their options, and the parameter records.

A control stream is split into records (``$NAME`` up to the next ``$``); names may be
abbreviated as NM-TRAN allows (``$EST``, ``$COV``, ``$PROB``, ``$SUBR``). Each record
keeps its line numbers so every complaint names ``$RECORD`` and the line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field


class ControlStreamError(ValueError):
    """A control stream that pkmix cannot import: names the record, the line and the rule."""


# Record names NM-TRAN knows, in the order an abbreviation is resolved (first match wins).
SUPPORTED = ("PROBLEM", "INPUT", "DATA", "SUBROUTINES", "PK", "ERROR", "PRED", "DES", "MODEL", "THETA", "OMEGA",
             "SIGMA", "ESTIMATION", "COVARIANCE", "TABLE", "SIZES", "SCATTERPLOT", "ABBREVIATED")
KNOWN = SUPPORTED + ("MIX", "INFN", "AES", "AESINITIAL", "SIMULATION", "NONPARAMETRIC",
                     "PRIOR", "LEVEL", "ETAS", "PHIS", "MSFI", "SUPER", "OMIT", "THETAI", "THETAR", "THETAP",
                     "THETAPV", "OMEGAP", "OMEGAPD", "SIGMAP", "SIGMAPD", "CONTR", "FORMAT", "ANNEAL", "BIND",
                     "DESIGN", "TTDF", "RCOV", "RCOVI", "OLKJDF", "SLKJDF", "OVARF", "SVARF", "CHAIN", "WARNINGS",
                     "INDEX", "FORMAT")
ALIASES = {"SUBROUTINE": "SUBROUTINES", "ESTIMATE": "ESTIMATION", "PROB": "PROBLEM", "INFILE": "DATA",
           "COVR": "COVARIANCE", "ESTM": "ESTIMATION", "PROBLEMS": "PROBLEM"}


@dataclass
class Line:
    number: int  # 1-based line in the file
    code: str  # the text without its comment
    comment: str  # the text after ';' (stripped)


@dataclass
class Record:
    name: str  # canonical (PROBLEM, THETA, ...)
    written: str  # as written ($EST)
    line: int  # the line of the '$'
    lines: list[Line] = field(default_factory=list)

    def where(self, line: int | None = None) -> str:
        return f"${self.written} (line {line or self.line})"

    @property
    def text(self) -> str:
        return " ".join(ln.code for ln in self.lines)

    def fail(self, message: str, line: int | None = None):
        raise ControlStreamError(f"{self.where(line)}: {message}")


def canonical_name(word: str) -> str | None:
    w = word.upper()
    if w in ALIASES:
        return ALIASES[w]
    if w in KNOWN:
        return w
    if len(w) >= 3:
        for name in KNOWN:
            if name.startswith(w):
                return name
    return None


def split_records(text: str) -> list[Record]:
    """The records of a control stream, comments separated from code."""
    records: list[Record] = []
    current: Record | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        code, _, comment = raw.partition(";")
        stripped = code.lstrip()
        if stripped.startswith("$"):
            m = re.match(r"\$([A-Za-z_]\w*)", stripped)
            if not m:
                raise ControlStreamError(f"line {number}: '{stripped.split()[0]}' is not a record name")
            name = canonical_name(m.group(1))
            if name is None:
                raise ControlStreamError(f"line {number}: ${m.group(1)} is not an NM-TRAN record")
            current = Record(name=name, written=m.group(1).upper(), line=number)
            records.append(current)
            code = stripped[m.end():]
        elif current is None:
            if stripped or comment.strip():
                if stripped:
                    raise ControlStreamError(f"line {number}: text before the first record: {stripped.strip()!r}")
            continue
        current.lines.append(Line(number, code.rstrip(), comment.strip()))
    if not records:
        raise ControlStreamError("no NM-TRAN records ($PROBLEM, $INPUT, ...) found")
    return records


def options(text: str) -> list[tuple[str, str | None]]:
    """``KEY=VALUE`` / ``KEY VALUE-less`` options of a record, commas or spaces between
    them; a parenthesised value stays whole (``IGNORE=(DV.EQ.0, SD.EQ.0)``)."""
    tokens: list[str] = []
    i, n = 0, len(text)
    buf = ""
    depth = 0
    quote = None
    while i < n:
        c = text[i]
        if quote:
            buf += c
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
            buf += c
        elif c == "(":
            depth += 1
            buf += c
        elif c == ")":
            depth -= 1
            buf += c
        elif depth == 0 and (c.isspace() or c == ","):
            if buf:
                tokens.append(buf)
            buf = ""
        else:
            buf += c
        i += 1
    if buf:
        tokens.append(buf)
    # Join 'KEY = VALUE', 'KEY= VALUE', 'KEY =VALUE' and 'IGNORE (cond)'.
    out: list[tuple[str, str | None]] = []
    j = 0
    while j < len(tokens):
        t = tokens[j]
        if t == "=" and out and out[-1][1] is None and j + 1 < len(tokens):
            out[-1] = (out[-1][0], tokens[j + 1])
            j += 2
            continue
        if t.startswith("=") and out and out[-1][1] is None:
            out[-1] = (out[-1][0], t[1:])
            j += 1
            continue
        if t.endswith("=") and j + 1 < len(tokens):
            out.append((t[:-1].upper(), tokens[j + 1]))
            j += 2
            continue
        if "=" in t and not t.startswith("("):
            k, _, v = t.partition("=")
            out.append((k.upper(), v))
        elif t.startswith("(") and out and out[-1][1] is None and out[-1][0] in ("IGNORE", "ACCEPT", "IGN", "ACC"):
            out[-1] = (out[-1][0], t)
        elif "(" in t and t.endswith(")") and t.split("(")[0].upper() in ("IGNORE", "ACCEPT", "IGN", "ACC"):
            k, _, v = t.partition("(")
            out.append((k.upper(), "(" + v))
        else:
            out.append((t.upper(), None))
        j += 1
    return out


# ------------------------------------------------------------------ $THETA / $OMEGA / $SIGMA
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([EeDd][+-]?\d+)?$")


def number(text: str, record: Record, line: int) -> float:
    t = text.strip().upper()
    if t in ("INF", "+INF", "INFINITY"):
        return math.inf
    if t in ("-INF", "-INFINITY"):
        return -math.inf
    if not _NUMBER.match(t):
        record.fail(f"'{text}' is not a number", line)
    return float(t.replace("D", "E"))


@dataclass
class ThetaInit:
    lower: float
    init: float
    upper: float
    fixed: bool
    line: int
    comment: str


def _items(record: Record):
    """(text, line, comment) of each item of a parameter record: a parenthesised group,
    a word, with 'FIX'/'FIXED' kept as separate words."""
    for ln in record.lines:
        text = ln.code
        for m in re.finditer(r"[A-Za-z]+\s*\(\s*\d+\s*\)|\([^)]*\)?|[^\s,()]+", text):
            tok = re.sub(r"\s+", "", m.group(0)) if m.group(0)[:1].isalpha() else m.group(0)
            if tok.startswith("(") and not tok.endswith(")"):
                record.fail(f"'{tok}' has no closing parenthesis (a group must be on one line)", ln.number)
            yield tok, ln.number, ln.comment


def parse_thetas(record: Record) -> list[ThetaInit]:
    out: list[ThetaInit] = []
    for tok, line, comment in _items(record):
        up = tok.upper()
        if up in ("FIX", "FIXED"):
            if not out:
                record.fail("FIX without a value before it", line)
            out[-1].fixed = True
            continue
        if up.startswith("("):
            inner = tok[1:-1]
            fixed = bool(re.search(r"\bFIX(ED)?\b", inner, re.I))
            inner = re.sub(r"\bFIX(ED)?\b", " ", inner, flags=re.I)
            parts = [p for p in re.split(r"[\s,]+", inner.strip()) if p]
            if not 1 <= len(parts) <= 3:
                record.fail(f"'{tok}': expected (init), (low, init) or (low, init, up)", line)
            vals = [number(p, record, line) for p in parts]
            lo, init, hi = ((-math.inf, vals[0], math.inf) if len(vals) == 1 else
                            (vals[0], vals[1], math.inf) if len(vals) == 2 else tuple(vals))
            out.append(ThetaInit(lo, init, hi, fixed, line, comment))
        elif re.match(r"^\d+\*", tok) or up in ("SAME", "BLOCK", "DIAGONAL", "NAMES"):
            record.fail(f"'{tok}' is not supported in $THETA", line)
        else:
            out.append(ThetaInit(-math.inf, number(tok, record, line), math.inf, False, line, comment))
    for t in out:
        if not t.fixed and not (t.lower < t.init < t.upper):
            record.fail(f"initial value {t.init} is not strictly inside its bounds ({t.lower}, {t.upper})", t.line)
        if t.lower <= -1e6:  # NONMEM's stand-in for no lower bound
            t.lower = -math.inf
        if t.upper >= 1e6:
            t.upper = math.inf
    return out


@dataclass
class RandomBlock:
    """One $OMEGA/$SIGMA record: size 1 diagonal items or a BLOCK(n)."""

    values: list[float]  # diagonal: one per eta; block: the lower triangle by rows
    block: bool
    size: int
    fixed: list[bool]  # per diagonal item (a block: one flag)
    line: int
    comments: list[str]
    same: bool = False


def parse_random(record: Record) -> RandomBlock:
    """$OMEGA / $SIGMA: diagonal values, DIAGONAL(n), BLOCK(n) [FIX] [SAME]; values are
    variances (SD/STANDARD options square them); CORRELATION and CHOLESKY are refused."""
    what = record.name
    block = None
    sd = False
    values: list[float] = []
    fixed: list[bool] = []
    comments: list[str] = []
    lines: list[int] = []
    block_fixed = False
    same = False
    for tok, line, comment in _items(record):
        up = tok.upper()
        m = re.match(r"^(BLOCK|DIAGONAL)(\((\d+)\))?$", up)
        if m:
            if m.group(1) == "BLOCK":
                if not m.group(3):
                    record.fail("BLOCK needs its size, BLOCK(n)", line)
                block = int(m.group(3))
            continue
        if up.startswith("BLOCK(") or up.startswith("DIAGONAL("):
            record.fail(f"'{tok}' is not a valid BLOCK(n)/DIAGONAL(n)", line)
        if up in ("(", ")") or up.startswith("(") and up[1:-1].strip().upper() in ("BLOCK", ""):
            continue
        if up in ("FIX", "FIXED"):
            if block is not None:
                block_fixed = True
            elif not fixed:
                record.fail("FIX without a value before it", line)
            else:
                fixed[-1] = True
            continue
        if up == "SAME":
            same = True
            continue
        if up in ("SD", "STANDARD"):
            sd = True
            continue
        if up in ("VARIANCE", "VAR", "COVARIANCE", "UNINT"):
            continue
        if up in ("CORRELATION", "CORR", "CHOLESKY", "CHOL", "VALUES", "NAMES"):
            record.fail(f"{up} is not supported (give variances and covariances)", line)
        if up.startswith("("):
            inner = tok[1:-1]
            f = bool(re.search(r"\bFIX(ED)?\b", inner, re.I))
            parts = [p for p in re.split(r"[\s,]+", re.sub(r"\bFIX(ED)?\b", " ", inner, flags=re.I).strip()) if p]
            if len(parts) != 1:
                record.fail(f"'{tok}': expected one value, e.g. (0.1 FIX)", line)
            values.append(number(parts[0], record, line))
            fixed.append(f)
        else:
            values.append(number(tok, record, line))
            fixed.append(False)
        comments.append(comment)
        lines.append(line)
    if block is not None:
        if same:
            if values:
                record.fail("BLOCK(n) SAME takes no values", record.line)
            return RandomBlock([], True, block, [True], record.line, [], same=True)
        if len(values) != block * (block + 1) // 2:
            record.fail(f"BLOCK({block}) needs {block * (block + 1) // 2} values (a lower triangle), "
                        f"got {len(values)}")
        if sd:
            record.fail("SD in a BLOCK is not supported (give variances and covariances)")
        return RandomBlock(values, True, block, [block_fixed or any(fixed)], record.line, comments)
    if same:
        record.fail("SAME is only valid after BLOCK(n)")
    if not values:
        record.fail(f"${record.written} has no values")
    if sd:
        values = [v * v for v in values]
    return RandomBlock(values, False, len(values), fixed, lines[0] if lines else record.line, comments)

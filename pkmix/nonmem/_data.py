"""$INPUT and $DATA: the data file as NM-TRAN reads it, handed to pkmix as a DataFrame.

NM-TRAN reads the file by position: ``$INPUT`` names the columns (``NAME=DROP``, ``DROP``
and ``SKIP`` drop one; ``CP=DV`` gives the reserved label DV another name), header and
comment lines go by ``IGNORE=c`` (``@``: any line whose first non-blank character is a
letter or ``@``; the default is ``#``), and records go by ``IGNORE=(list)`` /
``ACCEPT=(list)`` conditions (a record is ignored when any IGNORE condition holds, kept
when every ACCEPT condition holds; ``.EQ.``/``==``/``=`` and ``.NE.``/``/=`` compare the
text, ``.EQN.``/``.NEN.`` and the orderings the numbers). ``.`` and empty fields are 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ._records import ControlStreamError, Record, options

# Data items with a meaning in NM-TRAN (pkmix reads those it knows by name).
RESERVED = ("ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "II", "ADDL", "SS", "L1", "L2", "DATE",
            "DAT1", "DAT2", "DAT3", "PCMT", "CALL", "CONT", "XVID1", "XVID2", "XVID3", "XVID4", "XVID5", "RAW_",
            "MRG_", "RPT_", "LAST20")
PASSED = ("ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "II", "ADDL", "SS")
_OPS = {"EQ": "==", "NE": "!=", "GT": ">", "GE": ">=", "LT": "<", "LE": "<=", "EQN": "==n", "NEN": "!=n"}


@dataclass
class InputItem:
    label: str  # the name the column goes by (the reserved label when there is one)
    alias: str | None
    drop: bool


@dataclass
class Condition:
    column: str
    op: str  # == != (text comparison), ==n !=n > >= < <= (numeric)
    value: str

    def holds(self, text: str) -> bool:
        if self.op in ("==", "!="):
            equal = text.strip() == self.value
            return equal if self.op == "==" else not equal
        x, v = _to_number(text), _to_number(self.value)
        if x is None or v is None:
            return False
        return {"==n": x == v, "!=n": x != v, ">": x > v, ">=": x >= v, "<": x < v, "<=": x <= v}[self.op]


@dataclass
class DataSpec:
    file: str
    ignore_char: str = "#"
    ignore: list[Condition] = field(default_factory=list)
    accept: list[Condition] = field(default_factory=list)
    line: int = 0


def _to_number(text: str):
    t = text.strip()
    if t in (".", ""):
        return 0.0
    try:
        return float(t.replace("D", "E").replace("d", "e"))
    except ValueError:
        return None


def parse_input(record: Record) -> list[InputItem]:
    items = []
    for key, value in options(record.text):
        if key in ("DROP", "SKIP") and value is None:
            items.append(InputItem(key, None, True))
            continue
        if value is None:
            items.append(InputItem(key, None, False))
            continue
        v = value.upper()
        if v in ("DROP", "SKIP"):
            items.append(InputItem(key, None, True))
        elif key in RESERVED and v not in RESERVED:
            items.append(InputItem(key, v, False))
        elif v in RESERVED and key not in RESERVED:
            items.append(InputItem(v, key, False))
        elif key in RESERVED and v in RESERVED:
            record.fail(f"{key}={v}: two reserved labels for one column")
        else:
            items.append(InputItem(key, v, False))
    if not items:
        record.fail("no data items")
    for it in items:
        if not it.drop and not re.match(r"^[A-Z][A-Z0-9_]*$", it.label):
            record.fail(f"'{it.label}' is not a valid data item label")
        if not it.drop and it.label in ("DATE", "DAT1", "DAT2", "DAT3"):
            record.fail(f"{it.label} (clock dates) is not supported; give TIME, or DROP the column")
    labels = [it.label for it in items if not it.drop]
    for name in labels:
        if labels.count(name) > 1:
            record.fail(f"the data item {name} is named twice")
    return items


def _conditions(text: str, record: Record) -> list[Condition]:
    inner = text.strip()
    if inner.startswith("(") and inner.endswith(")"):
        inner = inner[1:-1]
    out = []
    for part in [p for p in re.split(r"[,\s]+(?=[A-Za-z_])", inner.strip()) if p.strip()]:
        part = part.strip().rstrip(",")
        m = re.match(r"^([A-Za-z_]\w*)\s*(?:\.(EQN|NEN|EQ|NE|GT|GE|LT|LE)\.|(==|/=|>=|<=|=|>|<))\s*'?([^']*?)'?$",
                     part, re.I)
        if not m:
            record.fail(f"cannot read the condition '{part}' (expected e.g. DV.EQ.0 or SD.GT.1)")
        col, fortran, sym, value = m.groups()
        op = _OPS[fortran.upper()] if fortran else {"=": "==", "==": "==", "/=": "!=", ">=": ">=", "<=": "<=",
                                                       ">": ">", "<": "<"}[sym]
        out.append(Condition(col.upper(), op, value.strip()))
    return out


def parse_data(record: Record) -> DataSpec:
    opts = options(record.text)
    if not opts:
        record.fail("no data file named")
    file, first = opts[0]
    if first is not None:
        record.fail(f"the first item must be the data file, got {file}={first}")
    m = re.match(r"\s*(?:'([^']*)'|\"([^\"]*)\"|([^\s,]+))", record.text)
    file = next(g for g in m.groups() if g is not None)
    if m.group(1) is not None or m.group(2) is not None:  # a quoted name may hold spaces
        opts = options(record.text[m.end():])
        opts.insert(0, (file, None))
    spec = DataSpec(file=file, line=record.line)
    for key, value in opts[1:]:
        if len(key) >= 3 and ("IGNORE".startswith(key) or "ACCEPT".startswith(key)):
            key = "IGNORE" if "IGNORE".startswith(key) else "ACCEPT"  # NM-TRAN takes IGN=, ACC=
        if key in ("IGNORE", "ACCEPT") and value is not None and value.startswith("("):
            (spec.ignore if key == "IGNORE" else spec.accept).extend(_conditions(value, record))
        elif key == "IGNORE" and value is not None:
            v = value.strip("'\"")
            if len(v) != 1:
                record.fail(f"IGNORE={value}: expected one character or a list of conditions")
            spec.ignore_char = v
        elif key in ("NOWIDE", "WIDE", "REWIND", "NOREWIND", "NOOPEN", "CHECKOUT", "LRECL", "PRED_IGNORE_DATA",
                     "NOPRED_IGNORE_DATA"):
            if key == "CHECKOUT":
                record.fail("CHECKOUT (a data check run) is not supported")
        else:
            record.fail(f"the option {key}{'=' + value if value else ''} is not supported")
    if spec.ignore and spec.accept:
        record.fail("IGNORE=(list) and ACCEPT=(list) cannot both be given")
    return spec


def read_data(path: str | Path, items: list[InputItem], spec: DataSpec, keep: list[str]):
    """The records of ``path`` as a DataFrame with the columns in ``keep`` (labels)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        where = f"$DATA (line {spec.line})" if spec.line else "$DATA"
        raise ControlStreamError(f"{where}: the data file {path} does not exist")
    index = {}
    for i, it in enumerate(items):
        index.setdefault(it.label, i)
        if it.alias:
            index.setdefault(it.alias, i)
    for c in spec.ignore + spec.accept:
        if c.column not in index:
            raise ControlStreamError(f"$DATA: the condition on {c.column} names no $INPUT item")
    rows = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        text = raw.strip()
        if not text:
            continue
        first = text[0]
        if spec.ignore_char == "@":
            # '#' too: pkmix's own reader and most streams treat it as a comment
            if first.isalpha() or first in "@#":
                continue
        elif first == spec.ignore_char:
            continue
        fields = [f for f in re.split(r"\s*,\s*|\s+", text)]
        if len(fields) < len(items):
            fields += [""] * (len(items) - len(fields))
        if spec.ignore and any(c.holds(fields[index[c.column]]) for c in spec.ignore):
            continue
        # ACCEPT is IGNORE with each condition negated: a record stays when all hold
        if spec.accept and not all(c.holds(fields[index[c.column]]) for c in spec.accept):
            continue
        row = []
        for name in keep:
            value = _to_number(fields[index[name]])
            if value is None:
                raise ControlStreamError(f"{path.name} line {number}: {name} is '{fields[index[name]]}', not a number "
                                         f"(NM-TRAN needs numbers in every used column; DROP text columns in $INPUT)")
            row.append(value)
        rows.append(row)
    if not rows:
        where = f"$DATA (line {spec.line})" if spec.line else "$DATA"
        raise ControlStreamError(f"{where}: no records left in {path.name} after IGNORE/ACCEPT")
    frame = pd.DataFrame(rows, columns=keep)
    frame.attrs["source"] = str(path.resolve())  # where the records came from, for run outputs
    return frame

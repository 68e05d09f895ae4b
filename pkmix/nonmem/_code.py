"""NM-TRAN abbreviated code ($PK, $ERROR, $DES): parse, then lower IF blocks to selections.

Expressions are nested tuples (hashable, compared by structure):

* ``("num", value)``, ``("var", NAME)``, ``("theta", n)``, ``("eta", n)``, ``("eps", n)``,
  ``("a", n)`` (an amount A(n)), ``("dadt", n)``
* ``("neg", x)``, ``("+", x, y)``, ``("-", x, y)``, ``("*", x, y)``, ``("/", x, y)``, ``("**", x, y)``
* ``("call", FUNCTION, x)``
* ``("cmp", OP, x, y)`` with OP one of ``== != > >= < <=``, ``("and", x, y)``, ``("or", x, y)``,
  ``("not", x)``
* ``("where", condition, x, y)`` (what an IF becomes: the traced code keeps both branches)

Lowering turns the statements into a flat list of ``(name, expression, line)``: an
assignment under an IF becomes ``X = where(condition, new, old)`` (``old`` is 0 when X
had no value yet, as NONMEM's variables start at 0), so the code is a straight line that
JAX traces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._records import ControlStreamError, Record

FUNCTIONS = {"EXP", "LOG", "LOG10", "SQRT", "ABS", "SIN", "COS", "TAN", "ATAN", "INT", "MIN", "MAX",
             "PHI", "GAMLN", "MOD", "ASIN", "ACOS"}
SUPPORTED_FUNCTIONS = {"EXP", "LOG", "LOG10", "SQRT", "ABS", "SIN", "COS", "TAN", "ATAN", "PHI"}
INDEXED = {"THETA": "theta", "ETA": "eta", "EPS": "eps", "ERR": "eps", "A": "a", "DADT": "dadt"}
_FORTRAN = {".EQ.": "==", ".NE.": "!=", ".GT.": ">", ".GE.": ">=", ".LT.": "<", ".LE.": "<=",
            ".EQN.": "==", ".NEN.": "!=", ".AND.": "AND", ".OR.": "OR", ".NOT.": "NOT"}
_TOKEN = re.compile(r"""
    (?P<num>(\d+(\.(?!(EQN|NEN|EQ|NE|GT|GE|LT|LE|AND|OR|NOT)\.)\d*)?|\.\d+)([ED][+-]?\d+)?)
  | (?P<dot>\.(EQN|NEN|EQ|NE|GT|GE|LT|LE|AND|OR|NOT)\.)
  | (?P<name>[A-Z_][A-Z0-9_]*)
  | (?P<op>\*\*|==|/=|>=|<=|[-+*/(),=<>])
  | (?P<space>\s+)
""", re.VERBOSE)


@dataclass
class Assign:
    target: tuple  # ("var", NAME) or ("dadt", n) / ("a0", n)
    value: tuple
    line: int


@dataclass
class If:
    branches: list  # [(condition, [statements], line)]; condition None for ELSE


def tokenize(text: str, record: Record, line: int) -> list[tuple[str, object]]:
    out = []
    i = 0
    text = text.upper()
    while i < len(text):
        m = _TOKEN.match(text, i)
        if not m:
            record.fail(f"cannot read '{text[i:].strip()}' in '{text.strip()}'", line)
        i = m.end()
        kind = m.lastgroup
        if kind == "space":
            continue
        if kind == "num":
            out.append(("num", float(m.group(0).replace("D", "E"))))
        elif kind == "dot":
            out.append(("op", _FORTRAN[m.group(0)]))
        elif kind == "op":
            out.append(("op", "!=" if m.group(0) == "/=" else m.group(0)))
        else:
            out.append(("name", m.group(0)))
    return out


class _Parser:
    def __init__(self, tokens, record: Record, line: int):
        self.t = tokens
        self.i = 0
        self.record = record
        self.line = line

    def fail(self, message):
        self.record.fail(message, self.line)

    def peek(self, k=0):
        j = self.i + k
        return self.t[j] if j < len(self.t) else ("end", None)

    def take(self, kind=None, value=None):
        tok = self.peek()
        if (kind and tok[0] != kind) or (value is not None and tok[1] != value):
            want = value or kind
            got = tok[1] if tok[0] != "end" else "the end of the line"
            self.fail(f"expected '{want}', found '{got}'")
        self.i += 1
        return tok

    def at_end(self):
        return self.i >= len(self.t)

    # precedence climbing: OR < AND < NOT < comparison < +- < */ < unary - < **
    def expr(self):
        x = self.and_()
        while self.peek() == ("op", "OR"):
            self.take()
            x = ("or", x, self.and_())
        return x

    def and_(self):
        x = self.not_()
        while self.peek() == ("op", "AND"):
            self.take()
            x = ("and", x, self.not_())
        return x

    def not_(self):
        if self.peek() == ("op", "NOT"):
            self.take()
            return ("not", self.not_())
        return self.comparison()

    def comparison(self):
        x = self.sum()
        tok = self.peek()
        if tok[0] == "op" and tok[1] in ("==", "!=", ">", ">=", "<", "<="):
            self.take()
            return ("cmp", tok[1], x, self.sum())
        return x

    def sum(self):
        if self.peek() in (("op", "-"), ("op", "+")):
            sign = self.take()[1]
            x = self.product()
            x = ("neg", x) if sign == "-" else x
        else:
            x = self.product()
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            x = (op, x, self.product())
        return x

    def product(self):
        x = self.unary()
        while self.peek() in (("op", "*"), ("op", "/")):
            op = self.take()[1]
            x = (op, x, self.unary())
        return x

    def unary(self):
        # NM-TRAN accepts a sign after an operator (X*-Y, X**-2)
        if self.peek() == ("op", "-"):
            self.take()
            return ("neg", self.unary())
        if self.peek() == ("op", "+"):
            self.take()
            return self.unary()
        return self.power()

    def power(self):
        x = self.atom()
        if self.peek() == ("op", "**"):
            self.take()
            return ("**", x, self.unary())
        return x

    def atom(self):
        tok = self.peek()
        if tok[0] == "num":
            self.take()
            return ("num", tok[1])
        if tok == ("op", "("):
            self.take()
            x = self.expr()
            self.take("op", ")")
            return x
        if tok[0] == "name":
            self.take()
            name = tok[1]
            if self.peek() == ("op", "("):
                if name in INDEXED:
                    self.take()
                    n = self.take("num")[1]
                    if n != int(n) or n < 1:
                        self.fail(f"{name}({n}): the index must be a whole number from 1")
                    self.take("op", ")")
                    return (INDEXED[name], int(n))
                if name in FUNCTIONS:
                    if name not in SUPPORTED_FUNCTIONS:
                        self.fail(f"the function {name} is not supported")
                    self.take()
                    x = self.expr()
                    self.take("op", ")")
                    return ("call", name, x)
                self.fail(f"{name}(...) is not a function or array that pkmix knows")
            if name in INDEXED:
                self.fail(f"{name} needs an index, {name}(n)")
            return ("var", name)
        got = tok[1] if tok[0] != "end" else "the end of the line"
        self.fail(f"expected a value, found '{got}'")


def _target(p: _Parser):
    tok = p.take("name")
    name = tok[1]
    if p.peek() == ("op", "("):
        if name not in ("DADT", "A_0"):
            p.fail(f"cannot assign to {name}(...)")
        p.take()
        n = int(p.take("num")[1])
        p.take("op", ")")
        return ("dadt" if name == "DADT" else "a0", n)
    if name in INDEXED or name in FUNCTIONS:
        p.fail(f"cannot assign to {name}")
    return ("var", name)


def _assignment(p: _Parser, line: int) -> Assign:
    target = _target(p)
    p.take("op", "=")
    value = p.expr()
    if not p.at_end():
        p.fail(f"unexpected '{p.peek()[1]}' after the expression")
    return Assign(target, value, line)


def _logical_lines(record: Record):
    """(line number, code) with '&' continuations joined and blank lines dropped."""
    pending = ""
    start = None
    for ln in record.lines:
        code = ln.code.strip()
        if not code and not pending:
            continue
        if start is None:
            start = ln.number
        if code.endswith("&"):
            pending += code[:-1] + " "
            continue
        yield start, pending + code
        pending, start = "", None
    if pending:
        yield start, pending


def replacements(records: list[Record]) -> dict[str, str]:
    """``$ABBR REPLACE NAME=ETA(1)``: names standing for other code. Options that do not
    change the model (``PROTECT``, ``DERIV2``, ``COMRES``...) are accepted; ``DECLARE``,
    ``FUNCTION`` and other forms are refused."""
    out: dict[str, str] = {}
    for r in records:
        for ln in r.lines:
            text = ln.code.strip()
            if not text:
                continue
            m = re.match(r"^REPLACE\s+([A-Za-z_]\w*)\s*=\s*(.+)$", text, re.I)
            if m:
                name, value = m.group(1).upper(), m.group(2).strip().upper()
                if not re.match(r"^(ETA|THETA|EPS|ERR)\(\d+\)$|^[A-Z_]\w*$", value):
                    r.fail(f"REPLACE {name}={value}: only a name for THETA(n), ETA(n), EPS(n) or a variable is "
                           f"supported", ln.number)
                out[name] = value
            elif re.match(r"^(PROTECT|NOPROTECT|DERIV2\s*=\s*\w+|DERIV1\s*=\s*\w+|COMRES\s*=\s*-?\d+|"
                          r"FASTDER|NOFASTDER|CHECKMU|NOCHECKMU)(\s|$)", text, re.I):
                continue
            else:
                r.fail(f"'{text}' is not supported (pkmix import takes REPLACE NAME=ETA(n) and options that do "
                       f"not change the model)", ln.number)
    return out


def parse_code(record: Record, replace: dict[str, str] | None = None) -> list:
    """The statements of an abbreviated-code record (``replace``: $ABBR REPLACE names)."""
    root: list = []
    stack: list[tuple[If, list]] = []  # open IF blocks and the branch being filled
    for line, code in _logical_lines(record):
        if replace:
            code = re.sub(r"\b[A-Za-z_]\w*\b", lambda m: replace.get(m.group(0).upper(), m.group(0)), code)
        if code.startswith('"'):
            record.fail("verbatim code (a line starting with \") is not supported", line)
        up = code.upper()
        head = re.match(r"^(CALL|EXIT|RETURN|WRITE|PRINT|OPEN|CLOSE|DO|COMRES|CALLFL|DOWHILE|ENDDO)\b", up)
        if head:
            record.fail(f"{head.group(1)} statements are not supported", line)
        tokens = tokenize(code, record, line)
        p = _Parser(tokens, record, line)
        current = stack[-1][1] if stack else root
        first = tokens[0] if tokens else None
        if first == ("name", "IF"):
            p.take()
            p.take("op", "(")
            cond = p.expr()
            p.take("op", ")")
            if p.peek() == ("name", "THEN"):
                p.take()
                if not p.at_end():
                    p.fail("unexpected text after THEN")
                block = If([(cond, [], line)])
                current.append(block)
                stack.append((block, block.branches[0][1]))
            else:
                if p.at_end():
                    p.fail("IF (...) needs THEN or a statement")
                stmt = _assignment(p, line)
                current.append(If([(cond, [stmt], line)]))
            continue
        if first in (("name", "ELSE"), ("name", "ELSEIF")):
            if not stack:
                record.fail("ELSE without IF ... THEN", line)
            block = stack[-1][0]
            if block.branches[-1][0] is None:
                record.fail("a second ELSE in one IF block", line)
            p.take()
            if first == ("name", "ELSEIF") or p.peek() == ("name", "IF"):
                if first == ("name", "ELSE"):
                    p.take()
                p.take("op", "(")
                cond = p.expr()
                p.take("op", ")")
                p.take("name", "THEN")
            else:
                cond = None
            if not p.at_end():
                p.fail("unexpected text after ELSE")
            block.branches.append((cond, [], line))
            stack[-1] = (block, block.branches[-1][1])
            continue
        if first in (("name", "ENDIF"), ("name", "END")):
            p.take()
            if first == ("name", "END"):
                p.take("name", "IF")
            if not stack:
                record.fail("ENDIF without IF ... THEN", line)
            stack.pop()
            continue
        current.append(_assignment(p, line))
    if stack:
        record.fail("IF ... THEN without ENDIF", stack[-1][0].branches[0][2])
    return root


# ------------------------------------------------------------------------ lowering
@dataclass
class Flat:
    target: tuple
    value: tuple
    line: int


def _and(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return ("and", a, b)


def lower(statements, record: Record) -> list[Flat]:
    """Straight-line code: each IF becomes selections (see the module docstring)."""
    out: list[Flat] = []
    defined: set = set()
    count = [0]

    def walk(stmts, cond):
        for s in stmts:
            if isinstance(s, Assign):
                if s.target[0] == "a0":
                    record.fail("A_0 (initial amounts) is not supported", s.line)
                if cond is None:
                    value = s.value
                else:
                    old = s.target if s.target in defined else ("num", 0.0)
                    value = ("where", cond, s.value, old)
                defined.add(s.target)
                out.append(Flat(s.target, value, s.line))
            else:
                # Each condition is evaluated once, before the block (as NONMEM does), so an
                # assignment in one branch cannot change which branch runs.
                branches = []
                for c, body, line in s.branches:
                    if c is not None:
                        count[0] += 1
                        name = ("var", f"_C{count[0]}")
                        out.append(Flat(name, c, line))
                        c = name
                    branches.append((c, body, line))
                taken = None  # a branch runs when its condition holds and no earlier one did
                for c, body, _line in branches:
                    here = c if taken is None else (_and(("not", taken), c) if c is not None else ("not", taken))
                    walk(body, _and(cond, here))
                    if c is not None:
                        taken = c if taken is None else ("or", taken, c)

    walk(statements, None)
    return out


def symbols(expr, kinds=("var",)) -> set:
    """The leaves of ``expr`` of the given kinds (``("var", NAME)`` tuples ...)."""
    found = set()

    def visit(e):
        if e[0] in kinds:
            found.add(e)
        if e[0] in ("num", "var", "theta", "eta", "eps", "a", "dadt"):
            return
        for x in e[1:]:
            if isinstance(x, tuple):
                visit(x)

    visit(expr)
    return found


def needed(code: list[Flat], wanted: set) -> list[Flat]:
    """The statements that the targets in ``wanted`` depend on (dead code removed)."""
    keep = [False] * len(code)
    need = set(wanted)
    for i in range(len(code) - 1, -1, -1):
        s = code[i]
        if s.target in need:
            keep[i] = True
            need |= symbols(s.value, ("var", "dadt"))
    return [s for s, k in zip(code, keep) if k]


def inline(code: list[Flat], target: tuple, stop=frozenset()):
    """``target``'s value as one expression of the code's inputs (variables not assigned in
    ``code`` stay as they are; those in ``stop`` too)."""
    env: dict = {}

    def sub(e):
        if e[0] == "var" or e[0] == "dadt":
            if e in stop:
                return e
            return env.get(e, e)
        if e[0] in ("num", "theta", "eta", "eps", "a"):
            return e
        return (e[0],) + tuple(sub(x) if isinstance(x, tuple) else x for x in e[1:])

    for s in code:
        env[s.target] = sub(s.value)
    return env.get(target)


def simplify(e):
    """Constant folding enough to drop eps = 0 terms (x*0, x+0, EXP(0) ...)."""
    if e[0] in ("num", "var", "theta", "eta", "eps", "a", "dadt"):
        return e
    if e[0] == "call":
        x = simplify(e[2])
        if x == ("num", 0.0) and e[1] == "EXP":
            return ("num", 1.0)
        return ("call", e[1], x)
    if e[0] == "cmp":
        return ("cmp", e[1], simplify(e[2]), simplify(e[3]))
    args = [simplify(x) for x in e[1:]]
    zero, one = ("num", 0.0), ("num", 1.0)
    op = e[0]
    if op == "neg":
        return zero if args[0] == zero else ("neg", args[0])
    if op == "+":
        a, b = args
        if a == zero:
            return b
        if b == zero:
            return a
    elif op == "-":
        a, b = args
        if b == zero:
            return a
        if a == zero:
            return ("neg", b)
    elif op == "*":
        a, b = args
        if zero in (a, b):
            return zero
        if a == one:
            return b
        if b == one:
            return a
    elif op == "/":
        a, b = args
        if a == zero:
            return zero
        if b == one:
            return a
    elif op == "**":
        a, b = args
        if b == one:
            return a
    elif op == "where":
        c, a, b = args
        if a == b:
            return a
    if all(x[0] == "num" for x in args) and op in ("+", "-", "*", "/"):
        a, b = args[0][1], args[1][1]
        if op != "/" or b != 0:
            return ("num", {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0}[op])
    return (op,) + tuple(args)


def substitute(e, mapping: dict):
    """``e`` with each sub-expression found in ``mapping`` replaced (largest first)."""
    if e in mapping:
        return mapping[e]
    if e[0] in ("num", "var", "theta", "eta", "eps", "a", "dadt"):
        return e
    return (e[0],) + tuple(substitute(x, mapping) if isinstance(x, tuple) else x for x in e[1:])


__all__ = ["ControlStreamError", "parse_code", "lower", "inline", "simplify", "substitute", "symbols", "needed"]

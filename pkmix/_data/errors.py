"""Dataset problems: one `Violation` per broken rule, collected into one `DatasetError`.

A pharmacometrician fixing a dataset wants the whole list at once, with the record
number they can find in their file, not one error per run (pharmpy's `check_dataset`
reports the same way). So the reader never stops at the first problem: it collects
`Violation`s over the whole file and raises a single `DatasetError` holding them all.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable


def _format_id(value: object) -> str:
    """Write a subject ID as the user wrote it: ``3`` rather than ``3.0``."""
    if isinstance(value, float):
        if math.isnan(value):
            return "?"
        if value.is_integer():
            return str(int(value))
    return str(value)


@dataclasses.dataclass(frozen=True)
class Violation:
    """One broken dataset rule.

    Attributes:
        record: 1-based number of the data row in the source (header excluded), or
            None for problems with the whole dataset (a missing column).
        id: the subject ID on that record, or None when unknown.
        column: the column at fault (upper case), or None.
        rule: the rule that was broken, written as a condition, e.g. ``"AMT >= 0"``.
        message: what is wrong, in words, e.g. ``"negative amount"``.
    """

    record: int | None
    id: object | None
    column: str | None
    rule: str
    message: str

    def __str__(self) -> str:
        if self.record is None:
            where = "dataset"
        elif self.id is None:
            where = f"record {self.record}"
        else:
            where = f"record {self.record} (ID {_format_id(self.id)})"
        if self.column:
            where += f", column {self.column}"
        return f"{where}: {self.message} (rule: {self.rule})"


class DatasetError(ValueError):
    """A dataset breaks one or more rules; `violations` lists every one of them.

    ``str()`` gives a one-line summary followed by one line per violation, e.g.
    ``record 12 (ID 3), column AMT: negative amount (rule: AMT >= 0)``.

    Attributes:
        violations: every violation found, in record order (dataset-wide ones first).
        source: the file the dataset came from, or None.
    """

    def __init__(self, violations: Iterable[Violation], source: object | None = None):
        self.violations: list[Violation] = _sorted_unique(violations)
        self.source = source
        super().__init__(self._message())

    def _message(self) -> str:
        n = len(self.violations)
        where = f" in {self.source}" if self.source is not None else ""
        head = f"{n} problem{'s' if n != 1 else ''} found{where}:"
        return "\n".join([head] + [str(v) for v in self.violations])

    def __str__(self) -> str:
        return self._message()

    @property
    def rules(self) -> set[str]:
        """The distinct rules broken (handy for tests and for grouping a report)."""
        return {v.rule for v in self.violations}


class DatasetWarning(UserWarning):
    """A dataset is usable but probably not what the user meant (e.g. a subject with
    no observations, which contributes nothing to the likelihood)."""


def _sorted_unique(violations: Iterable[Violation]) -> list[Violation]:
    """Drop exact duplicates and order by record, keeping the discovery order otherwise.

    Duplicates arise naturally: an ADDL-expanded dose copies the covariates of a real
    record, so a missing covariate would otherwise be reported once per copy.
    """
    seen: set[tuple] = set()
    unique: list[Violation] = []
    for v in violations:
        key = (v.record, v.column, v.rule, v.message)
        if key not in seen:
            seen.add(key)
            unique.append(v)
    # A stable sort: dataset-wide problems (record None) first, then by record.
    return sorted(unique, key=lambda v: -1 if v.record is None else v.record)

"""Import NONMEM control streams (NM-TRAN) as pkmix models.

``pkmix.nonmem.load("run1.mod")`` parses the control stream, writes it as a pkmix model
file (the same text ``pkmix import run1.mod`` prints) and runs that file: a module with
``model``, ``ESTIMATION`` (the method of ``$ESTIMATION``, the matrix of ``$COVARIANCE``)
and ``load_data()`` (``$DATA`` read as NM-TRAN reads it, relative to the control stream).

Why a parser of our own rather than Pharmpy (``pharmpy-core``): measured here, Pharmpy
installs 118 packages (about 900 MB: scipy, pandas, sympy, symengine, statsmodels,
altair, ...), ``import pharmpy.modeling`` takes 1.8 s, and its parser rejected
``$SUBR ADVAN4,TRANS4`` (comma-separated options, which NM-TRAN accepts and real streams
use). What pkmix needs is narrower than what Pharmpy does (a model to translate to JAX,
not a symbolic model to transform): records with their options, the parameter records,
and abbreviated code (assignments, IF blocks, a few functions). That is a few hundred
lines with no dependency, whose every refusal names the record and line. Pharmpy's
test control streams with their NONMEM results are the acceptance tests
(``tests/data/nonmem``).

What is supported, and how names map: ``docs/nonmem_import.md``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from .._model.error_models import EpsError as EpsError
from .._model.error_models import eps_error as eps_error
from ._data import Condition, DataSpec, InputItem, read_data
from ._records import ControlStreamError as ControlStreamError
from ._translate import ControlStream as ControlStream
from ._translate import Translation as Translation
from ._translate import read as read
from ._translate import translate as translate

CONTROL_STREAM_SUFFIXES = (".mod", ".ctl")


def to_source(path: str | os.PathLike, *, out: str | os.PathLike | None = None) -> str:
    """The pkmix model file of the control stream at ``path``. With ``out`` (where the
    file will be written) the ``$DATA`` path is written relative to it."""
    path = Path(path)
    cs = read(path)
    data_path = None
    if cs.data is not None:
        target = (path.parent / cs.data.file).resolve()
        where = Path(out).resolve().parent if out is not None else path.resolve().parent
        data_path = os.path.relpath(target, where)
    return translate(cs, data_path=data_path).source


def load(path: str | os.PathLike) -> ModuleType:
    """Run the translation of the control stream at ``path`` as a module (see the module
    docstring). Raises ControlStreamError naming the record and line of what cannot be
    imported."""
    path = Path(path)
    source = to_source(path)
    module = ModuleType(f"_pkmix_nonmem_{path.stem}")
    module.__file__ = str(path.resolve())
    module.SOURCE = source
    code = compile(source, f"<{path.name} translated by pkmix import>", "exec")
    exec(code, module.__dict__)
    return module


def read_data_file(path, items, *, ignore_char="#", ignore=(), accept=(), columns=(), occasions=None,
                   observed=None):
    """$DATA as NM-TRAN reads it: ``items`` are $INPUT's ``(label, alias, dropped)``,
    ``ignore``/``accept`` the conditions ``(column, op, value)``; returns a DataFrame of
    ``columns``. ``occasions=(column, n)``: the column must hold 1..n (the occasions of
    n inter-occasion etas). ``observed``: the compartment F is read from; an observation
    with another CMT is refused (NONMEM's F would be that compartment's)."""
    spec = DataSpec(file=str(path), ignore_char=ignore_char, ignore=[Condition(*c) for c in ignore],
                    accept=[Condition(*c) for c in accept])
    frame = read_data(path, [InputItem(*it) for it in items], spec, list(columns))
    if observed is not None and "CMT" in frame:
        if "EVID" in frame:
            obs = frame["EVID"] == 0
        elif "MDV" in frame:
            obs = frame["MDV"] == 0
        else:
            obs = frame["AMT"] == 0 if "AMT" in frame else frame["CMT"] == frame["CMT"]
        other = sorted(int(c) for c in set(frame.loc[obs, "CMT"]) - {0, observed})
        if other:
            raise ControlStreamError(f"{Path(path).name}: observations in compartment(s) {other}; the imported "
                                     f"model predicts compartment {observed} (F in $ERROR), as NONMEM does for "
                                     f"CMT {observed}: pkmix import takes one observed compartment")
    if occasions is not None:
        column, n = occasions
        bad = sorted(set(frame[column]) - set(range(1, n + 1)))
        if bad:
            raise ControlStreamError(f"{Path(path).name}: {column} holds {bad[:5]}; the control stream has {n} "
                                     f"inter-occasion etas (BLOCK(1) SAME), for {column} = 1..{n}")
    return frame


__all__ = ["ControlStreamError", "ControlStream", "Translation", "read", "translate", "to_source", "load",
           "read_data_file", "eps_error", "EpsError", "CONTROL_STREAM_SUFFIXES"]

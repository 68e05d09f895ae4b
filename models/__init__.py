"""The library of published population PK models (installed as ``pkmix.models``).

Each module defines a module-level ``model`` (a ``pkmix.Model`` with the published
values) and ``METADATA`` (citation, units, conventions, validated covariate ranges,
targets); see ``pkmix.models.available()``::

    import pkmix.models
    pkmix.models.available()                         # ['amikacin_burdet2015', ...]
    mod = pkmix.models.load("vancomycin_goti2018")   # the module
    mod.model, mod.METADATA
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def available() -> list[str]:
    """Names of the models in the library (module names, sorted)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load(name: str) -> ModuleType:
    """The library module ``name`` (with ``.model`` and ``.METADATA``).

    Raises:
        KeyError: no model of that name (the message lists the available ones).
    """
    names = available()
    if name not in names:
        raise KeyError(f"no model '{name}' in pkmix.models; available: {', '.join(names)}")
    return importlib.import_module(f"{__name__}.{name}")

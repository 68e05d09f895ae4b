"""Estimation methods, one file each: FO, FOCE, FOCE-I, Laplace, AGQ, IMP, SAEM."""

from .agq import AGQ as AGQ
from .base import AbstractMethod as AbstractMethod
from .fo import FO as FO
from .foce import FOCE as FOCE
from .focei import FOCEI as FOCEI
from .imp import IMP as IMP
from .laplace import Laplace as Laplace
from .saem import SAEM as SAEM

METHODS = {"fo": FO(), "foce": FOCE(), "focei": FOCEI(), "laplace": Laplace(), "agq": AGQ(),
           "imp": IMP(), "saem": SAEM()}


def get_method(name) -> AbstractMethod:
    if isinstance(name, AbstractMethod):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[key]

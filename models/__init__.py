"""The library of published population PK models (installed as ``pkmix.models``).

Each module defines a module-level ``model`` (a ``pkmix.Model`` with the published
values) and ``METADATA`` (citation, units, validated covariate ranges); see
``pkmix.models.available()``.
"""

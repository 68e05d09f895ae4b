"""Bayesian dosing: MAP individualisation, posterior, regimen optimisation."""

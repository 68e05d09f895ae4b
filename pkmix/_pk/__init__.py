"""Structural models and dosing: the interface a structural model implements
(``base``), closed-form compartment models (``closed_form``, ADVAN1-4/11/12), ODE
models (``ode``; the stiff solver in ``_stiff``, imported only when used), and the
event engine that applies NONMEM's dosing records to any of them (``events``)."""

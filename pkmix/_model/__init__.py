"""The model definition: parameter declarations and values (``parameters``), the map
between the free parameters and an unconstrained vector (``transforms``), residual
error models (``error_models``), and ``Model``, which checks a definition when it is
created and evaluates individual parameters and predictions (``model``)."""

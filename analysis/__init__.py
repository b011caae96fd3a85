"""Analysis of measured curves as pure functions: NumPy, SciPy and pandas, no JAX, no torch, no I/O.

``inflection`` (the inflection T* of a curve over its time grid: the one implementation every store's
rows and ``ovt compare`` use), ``phenomenology`` (the power-law decomposition L + S, its closed-form
T*(m), and the linear model fitted to a measured curve), ``families`` (a loaded result frame as
fittable families: one base curve and one modification at several sizes; the fit window) and
``fits`` (every fit of one family, with bootstrap intervals and held-out predictions, as a JSON-able
entry; the summary rows). ``ovt compare`` (``experiments/compare.py``) finds the stores, calls these
and writes what they return; the figures draw it.
"""

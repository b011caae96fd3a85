"""The run directory: the base layer every run writes and every reader reads.

``store`` (the long-form table, the manifest, chunks), ``lifecycle`` (new / resume / replace, the lock,
the statuses), ``derived`` (rows computed from stored rows alone: inflection points, tuned lrs) and
``atomic`` (every file and folder written under a temporary name and renamed into place). It imports
NumPy, pandas and ``analysis``, never run code (kept by the import-linter contracts in pyproject.toml).
"""

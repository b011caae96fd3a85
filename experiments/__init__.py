"""Configs, presets, sweeps, the result store and the ``ovt`` CLI: everything that touches a disk,
a terminal or a clock. ``llm_validation`` is imported lazily, so theory runs need no torch."""

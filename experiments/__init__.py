"""Everything that touches a disk, a terminal or a clock, in two wings over the run directory.

- ``sweep``: the theory wing (a linear-model experiment's config, presets, the chunked sweep runner,
  cluster jobs);
- ``llm``: the LLM wing (typed run configs and presets, checkpoint series, the run kinds under
  ``llm.kinds`` with the lifecycle they share, job arrays, the controlled study);
- ``cli`` (the ``ovt`` command) on top, ``arguments`` (the number readers of every flag) below the
  configs, ``compare`` (theory meets data) and ``explore`` (the explorer's Python API).

Both wings write run directories through ``rundir`` (the base layer). ``llm_validation`` is imported
lazily, so theory runs need no torch.
"""

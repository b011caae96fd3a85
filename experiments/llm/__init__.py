"""The LLM wing: typed run configs and presets, checkpoint series, the run lifecycle shared by the
run kinds (``kinds``), cluster job arrays, several runs in worker processes (``batch``), the
controlled study with its report and power analysis, and the CPU reproduction."""

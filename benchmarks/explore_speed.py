"""Re-render time of the explorer (``notebooks/explore.py``) per control change, at the default size.

A control change in marimo re-runs the cells downstream of it: the setup, ``experiments.explore.explore``
(curves, T*, prediction, both landscapes) and the figure (``paper_figures.explorer.screen_png``: blitted on
a kept figure, PNG), shown as ``mo.vstack([mo.md(T* line), mo.image(png)])``, whose HTML (the PNG in
base64) is what the kernel sends. This times exactly that chain, one control moved at a time from the
default setup (theta and rho from their own task), split into its three parts (numbers, figure, marimo's
HTML), twice: *cold* (the first time a compiled shape or a figure frame is met: a new depth, the L2 pull,
the GD path of a misaligned B, another number of GD steps) and *warm* (after ``explore.warm()``, which the
notebook runs in a background thread on start), each to a value not visited before. Target: < 0.5 s.

CPU time (all threads of this process) is the steady number on a shared machine: other jobs' load
inflates wall time but not it. Each warm row is the median of ``REPEATS`` renders, each at a value of
its own.

    python benchmarks/explore_speed.py
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time

import marimo as mo

from experiments import explore
from paper_figures import explorer as figures

TARGET_S = 0.5
REPEATS = 3
D = explore.DEFAULT
ROTATED = dataclasses.replace(D, rank=16, finetune_task="rotated", theta=0.25)
CORRELATED = dataclasses.replace(D, rank=16, finetune_task="correlated", rho=0.25)
# (control, base setup, cold change, warm changes): every value not visited before in its phase.
CHANGES = [
    ("alpha", D, dict(alpha=1.3), [dict(alpha=a) for a in (0.8, 0.9, 1.2)]),
    ("rank", D, dict(rank=16), [dict(rank=r) for r in (24, 20, 12)]),
    ("s1", D, dict(s1=2.0), [dict(s1=s) for s in (0.5, 0.25, 4.0)]),
    ("u0", D, dict(u0=1e-4), [dict(u0=u) for u in (1e-8, 1e-9, 1e-5)]),
    ("depth", D, dict(depth=3), [dict(depth=d) for d in (4, 1, 3)]),
    ("gamma", D, dict(gamma=0.3), [dict(gamma=g) for g in (0.4, 0.5, 0.6)]),
    ("sigma", D, dict(init_std=0.125), [dict(init_std=s) for s in (0.25, 0.0884, 0.2)]),
    ("lr", D, dict(lr=0.04), [dict(lr=r) for r in (0.08, 0.16, 0.01)]),
    ("steps", D, dict(steps=200), [dict(steps=s) for s in (50, 400, 25)]),
    ("lambda", D, dict(reg=0.3), [dict(reg=v) for v in (1.0, 3.0, 0.2)]),
    (
        "task permuted",
        D,
        dict(finetune_task="permuted"),
        [dict(finetune_task="permuted", alpha=a) for a in (1.1, 0.7, 1.4)],
    ),
    (
        "task rotated",
        D,
        dict(rank=16, finetune_task="rotated"),
        [dict(rank=r, finetune_task="rotated") for r in (8, 12, 4)],
    ),
    (
        "task correlated",
        D,
        dict(rank=16, finetune_task="correlated"),
        [dict(rank=r, finetune_task="correlated") for r in (24, 8, 30)],
    ),
    ("theta (rotated)", ROTATED, dict(theta=0.5), [dict(theta=t) for t in (1.0, 0.75, 1.25)]),
    ("rho (correlated)", CORRELATED, dict(rho=0.5), [dict(rho=r) for r in (-0.5, 0.75, -0.25)]),
]
PARTS = ("numbers", "figure", "marimo")


def render(setup: explore.Setup) -> dict[str, tuple[float, float]]:
    """{part: (wall, CPU) seconds} of what a control change runs: the numbers, the figure as PNG, the
    cell's output as HTML; "total" their sum."""
    times = {}
    for part in PARTS:
        start, cpu = time.perf_counter(), time.process_time()
        if part == "numbers":
            result = explore.explore(setup)
        elif part == "figure":
            png = figures.screen_png(result)
        else:
            html = mo.vstack([mo.md(figures.t_star_text(result)), mo.image(png)]).text
            assert "<img" in html
        times[part] = (time.perf_counter() - start, time.process_time() - cpu)
    times["total"] = tuple(sum(times[p][i] for p in PARTS) for i in (0, 1))
    return times


def _median(runs: list[dict]) -> dict[str, tuple[float, float]]:
    return {k: tuple(statistics.median(r[k][i] for r in runs) for i in (0, 1)) for k in runs[0]}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    first = render(D)["total"]
    print(f"explorer re-render per control change: {_cpu_model()}, {os.cpu_count()} CPUs")
    print(f"load average {os.getloadavg()[0]:.1f}; first render of the default setup (compiles): {first[0]:.2f} s")
    render(dataclasses.replace(D, gamma=0.15))  # a steady state: the default path compiled and drawn
    cold = {}
    for name, base, change, _ in CHANGES:
        render(base)
        cold[name] = render(dataclasses.replace(base, **change))["total"]
    start = time.perf_counter()
    explore.warm()
    warm_s = time.perf_counter() - start
    warm = {}
    for name, base, _, changes in CHANGES:
        render(base)
        warm[name] = _median([render(dataclasses.replace(base, **change)) for change in changes])
    print(f"explore.warm() (the notebook's background compile): {warm_s:.1f} s")
    print(
        f"| control | cold wall / CPU (s) | warm wall / CPU (s) | warm CPU: numbers / figure / marimo (s) "
        f"| CPU < {TARGET_S} s |"
    )
    print("|---|---|---|---|---|")
    for name in cold:
        (cw, cc), w = cold[name], warm[name]
        split = " / ".join(f"{w[p][1]:.3f}" for p in PARTS)
        ok = "yes" if w["total"][1] < TARGET_S else "no"
        print(f"| {name} | {cw:.2f} / {cc:.2f} | {w['total'][0]:.3f} / {w['total'][1]:.3f} | {split} | {ok} |")
    slowest = max(warm, key=lambda k: warm[k]["total"][1])
    print(
        f"slowest after warm-up (CPU): {warm[slowest]['total'][1]:.3f} s ({slowest}); "
        f"load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()

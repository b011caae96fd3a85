"""Timing and the machine for the benchmarks: medians of interleaved repeats, CPU beside wall time, the
BLAS and CPU in use, and child processes with their own thread settings.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import jax
import numpy as np
import optax


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` over ``repeats`` calls (fn must block until its result is ready)."""
    times = [timed(fn)[0] for _ in range(repeats)]
    return statistics.median(times), times


def timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one call of ``fn``; CPU time sums every thread of this process.

    On a shared machine the wall time depends on how much of the cores other processes leave us;
    GFLOP per CPU-second measures the kernels themselves and is far steadier.
    """
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def fmt_s(t: float) -> str:
    return f"{t * 1e3:.3g} ms" if t < 1 else f"{t:.3g} s"


def openblas_runtime() -> str:
    """Thread count and kernel of the OpenBLAS that NumPy's wheel bundles (best effort)."""
    libdir = os.path.join(os.path.dirname(np.__file__) + ".libs")
    for path in glob.glob(os.path.join(libdir, "*openblas*")):
        try:
            lib = ctypes.CDLL(path)
            for prefix in ("scipy_openblas_", "openblas_"):
                for suffix in ("64_", ""):
                    threads = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                    core = getattr(lib, f"{prefix}get_corename{suffix}", None)
                    if threads is not None:
                        name = "?"
                        if core is not None:
                            core.restype = ctypes.c_char_p
                            name = core().decode()
                        return f"{threads()} threads, kernel {name}"
        except OSError:
            continue
    return "unknown"


def cpu_model() -> str:
    """The CPU's model name and its widest vector extension (the matmul kernels' ceiling depends on it)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or "?"
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags = set((re.search(r"^flags\s*:\s*(.+)$", info, re.M) or [None, ""])[1].split())
    vector = next((v for v in ("avx512f", "avx2", "avx", "sse4_2") if v in flags), "?")
    return f"{name[1].strip() if name else '?'} ({vector.replace('f', '') if vector == 'avx512f' else vector})"


def print_machine() -> None:
    cpu = cpu_model()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # numpy without the dict config
        blas = "?"
    import jaxlib

    print("== machine ==")
    print(f"cpu: {cpu}; nproc (affinity) = {affinity}, os.cpu_count = {os.cpu_count()}, load average = {load}")
    print(
        f"python {platform.python_version()}, jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
        f"numpy {np.__version__}, optax {optax.__version__}; jax devices: {jax.devices()}"
    )
    print(f"numpy BLAS: {blas} ({openblas_runtime()})")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS", "JAX_ENABLE_X64"):
        print(f"  {var}={os.environ.get(var, '<unset>')}")
    print()


def step_kernels(compiled) -> str:
    """Which kernels the compiled GD step uses (dots via YNNPACK / XNNPACK / oneDNN vs XLA's own dot)."""
    try:
        text = compiled.as_text()
    except Exception:
        return "n/a"
    counts = {  # instruction definitions only (a fused computation's own ROOT dot is not counted again)
        "YNNPACK fusions": len(re.findall(r"^\s*%\S*ynn\S* = .*? fusion\(", text, re.M)),
        "XNNPACK fusions": len(re.findall(r"^\s*%\S*xnn\S* = .*? fusion\(", text, re.M)),
        "oneDNN fusions": len(re.findall(r"^\s*%\S*onednn\S* = .*? fusion\(", text, re.M)),
        "plain XLA dots (Eigen)": len(re.findall(r"^\s*%\S+ = \S+ dot\(", text, re.M)),
    }
    return ", ".join(f"{v} {k}" for k, v in counts.items() if v)


THREAD_SETTINGS = {
    # The machine's default: XLA's intra-op pool and OpenBLAS's threads over every core.
    "all cores": {},
    # One core: the child pinned to one CPU (XLA and OpenBLAS size their pools by it), one OpenBLAS
    # thread, Eigen single-threaded; set before either library starts, hence a child process.
    "one core": {"openblas_threads": 1, "xla_flags": "--xla_cpu_multi_thread_eigen=false", "pin": True},
}


def in_child(call: str, xla_flags: str = "", openblas_threads: int | None = None, pin: bool = False):
    """``call`` (an expression on this module, returning JSON-able data) in a fresh Python with its own
    XLA flags, OpenBLAS threads and CPU affinity (all fixed when the libraries start); returns
    (its result, the XLA_FLAGS it ran under)."""
    env = dict(os.environ)
    if openblas_threads is not None:
        env["OPENBLAS_NUM_THREADS"] = str(openblas_threads)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
    pin_code = "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); " if pin else ""
    result = subprocess.run(
        [sys.executable, "-c", f"import json, os; {pin_code}import theory_speed as b; print(json.dumps(b.{call}))"],
        env=env,
        cwd=os.path.dirname(os.path.abspath(__file__)),
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise RuntimeError(f"{call} under XLA_FLAGS={env['XLA_FLAGS']!r} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1]), env["XLA_FLAGS"]


def cpu_per_call(jax_fn, numpy_fn, repeats: int) -> tuple[float, float]:
    """Median CPU seconds of ``jax_fn()`` and ``numpy_fn()`` (``interleaved``)."""
    runs = interleaved({"jax": jax_fn, "numpy": numpy_fn}, repeats)
    return runs["jax"][1], runs["numpy"][1]


def interleaved(fns: dict, repeats: int) -> dict:
    """``{name: (median wall s, median CPU s, last result)}``: each fn run once to warm up, then the
    names in turn ``repeats`` times, so background load hits every one alike."""
    results = {name: jax.block_until_ready(fn()) for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            results[name] = jax.block_until_ready(fn())
            times[name].append((time.perf_counter() - t0, time.process_time() - c0))
    return {
        name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t), results[name])
        for name, t in times.items()
    }

"""Speed of the JAX linear-network simulator (`theory/`) against plain NumPy and against the closed form.

Run: ``python benchmarks/theory_speed.py [--quick]`` (``make bench``). One run prints, side by side:

(a) full-batch GD on a two-layer linear network, d_in = h = d_out = 64, 2,000 steps, 32 cells
    (32 random inits, vmapped): ``jit(vmap(theory.simulate.train))`` with ``optax.sgd`` (lax.scan over
    steps) vs a plain NumPy loop over steps with batched ``np.matmul`` over the 32 cells.
    Target: >= 1.0x in CPU time.
(b) achieved GFLOP/s of the same batched JAX simulation at d = h = 256, counting 6 d^3 FLOPs per GD
    step per cell (three d x d x d matmuls, 2 d^3 each; the O(d^2) elementwise work is not counted),
    as a fraction of this machine's NumPy (OpenBLAS) float32 2048^2 GEMM peak, and of jnp's.
    Target: >= 0.7 of NumPy's.
(c) the L_A(T) curve of an aligned balanced two-layer network (d = h = 32, power-law spectrum,
    u0 = 1e-6, 61 log-spaced T in [0.1, 1e4], vmapped over cells) from the closed form
    ``closed_form.mode_strength`` vs ``simulate.gradient_flow`` (RK4) on the full matrices. Target >= 1000x.
(d) where (a)'s time goes: each op of one step alone (the NN, NT and TN GEMMs, the update, the loss)
    as a JAX scan and as a NumPy loop, CPU time per step, under the machine's default threads and
    under one thread (a child process per setting: thread pools are fixed when a library starts).
(e) the general-case presets' size: minibatch SGD and Adam at d = h = 32, batch 512, 8 cells, JAX
    ``simulate.train`` vs a plain NumPy loop with the gradient written out. Target: >= 1.0x in CPU time.
(f) (a)'s step under the kernel options of the pinned jaxlib (YNNPACK, Eigen, XNNPACK, oneDNN), each in
    a child process: which kernels the compiled step uses and its CPU time. The project sets none of
    them: see docs/ARCHITECTURE.md, "Speed of the theory half".

Timing: ``time.perf_counter``, compile timed separately (AOT ``lower().compile()``), warm-up runs,
``block_until_ready``, the median of the repeats (3; ``--quick``: 1; sizes never change); JAX and NumPy
repeats are interleaved so that load from other processes hits both alike. Next to wall time the script
prints CPU time (``time.process_time``, all threads): on a shared machine wall time depends on the share
of the cores other processes leave, GFLOP per CPU-second measures the kernels. Everything is float32.
XLA CPU options can be passed through ``XLA_FLAGS`` (printed in the header).
"""

from __future__ import annotations

import argparse
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
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/theory_speed.py` from anywhere

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from theory import closed_form, network, simulate, tasks  # noqa: E402

F32 = jnp.float32


# ----------------------------------------------------------------------------------------------- helpers


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


# ----------------------------------------------------------------------------------- (a) and (b): GD


def gd_problem(d: int, cells: int, sigma: float = 0.05):
    """Teacher A (power-law spectrum, random singular vectors) and ``cells`` Gaussian inits, float32."""
    A = tasks.teacher(jax.random.PRNGKey(0), tasks.power_law_spectrum(d), d, d).matrix.astype(F32)
    keys = jax.random.split(jax.random.PRNGKey(1), cells)
    W0 = jax.vmap(lambda k: network.init_gaussian(k, network.widths(d, d, d), sigma))(keys)
    return A, tuple(w.astype(F32) for w in W0)


def jax_gd(A, lr: float, n_steps: int):
    """jit(vmap over cells of simulate.train), one snapshot at the end (record_every = n_steps)."""
    objective = simulate.population_objective(A)
    opt = optax.sgd(lr)
    return jax.jit(jax.vmap(lambda W: simulate.train(objective, W, opt, n_steps, n_steps)))


def numpy_gd(A: np.ndarray, W0, lr: float, n_steps: int):
    """Plain NumPy: a Python loop over steps, batched matmuls over the cells (axis 0)."""
    W1, W2 = np.array(W0[0]), np.array(W0[1])
    for _ in range(n_steps):
        R = W2 @ W1 - A  # (C, d_out, d_in) residual M - A
        g2 = R @ W1.transpose(0, 2, 1)  # dL/dW2 = R W1^T
        g1 = W2.transpose(0, 2, 1) @ R  # dL/dW1 = W2^T R
        W1 -= lr * g1
        W2 -= lr * g2
    return W1, W2


def numpy_gd_per_cell(A: np.ndarray, W0, lr: float, n_steps: int):
    """Plain NumPy, one cell at a time (the naive variant)."""
    W1s, W2s = np.array(W0[0]), np.array(W0[1])
    for c in range(W1s.shape[0]):
        W1, W2 = W1s[c], W2s[c]
        for _ in range(n_steps):
            R = W2 @ W1 - A
            g2 = R @ W1.T
            g1 = W2.T @ R
            W1 -= lr * g1
            W2 -= lr * g2
    return W1s, W2s


def np_loss(W1, W2, A):
    return 0.5 * np.sum((W2 @ W1 - A) ** 2, axis=(1, 2))


def bench_a(repeats: int, d: int = 64, cells: int = 32, n_steps: int = 2000, lr: float = 0.1) -> dict:
    print(
        f"== (a) full-batch GD, 2-layer linear, d_in = h = d_out = {d}, {n_steps} steps, {cells} cells, "
        f"lr = {lr}, float32 =="
    )
    A, W0 = gd_problem(d, cells)
    f = jax_gd(A, lr, n_steps)
    t0 = time.perf_counter()
    compiled = f.lower(W0).compile()
    t_compile = time.perf_counter() - t0
    print(f"compiled step: {step_kernels(compiled)}")

    def run_jax():
        return jax.block_until_ready(compiled(W0))

    A_np = np.asarray(A)
    # Warm-up on 20 steps of the same kernels (thread pools, YNNPACK plans, BLAS threads, page faults): the
    # timed executable's own first-call setup is a few buffers, not worth a full 2,000-step warm-up run.
    jax.block_until_ready(jax_gd(A, lr, 20)(W0))
    numpy_gd(A_np, W0, lr, 20)
    runs, out = {"jax": [], "np": []}, {}
    for _ in range(repeats):  # interleaved: background load hits both alike
        runs["jax"].append(timed(lambda: out.__setitem__("jax", run_jax())))
        runs["np"].append(timed(lambda: out.__setitem__("np", numpy_gd(A_np, W0, lr, n_steps))))
    tj, tn = (statistics.median(w for w, _ in runs[k]) for k in ("jax", "np"))
    cj, cn = (statistics.median(c for _, c in runs[k]) for k in ("jax", "np"))

    pc_steps = max(1, n_steps // 10)
    t_pc, c_pc = (x * (n_steps / pc_steps) for x in timed(lambda: numpy_gd_per_cell(A_np, W0, lr, pc_steps)))

    Wj = out["jax"]
    loss_jax = np.asarray(jax.vmap(network.task_loss, in_axes=(0, None))((Wj[0][:, -1], Wj[1][:, -1]), A))
    loss_np = np_loss(*out["np"], A_np)
    loss_0 = np_loss(np.asarray(W0[0]), np.asarray(W0[1]), A_np)
    rel = float(np.max(np.abs(loss_jax - loss_np) / np.abs(loss_np)))
    gflop = 6 * d**3 * cells * n_steps / 1e9

    def line(name, t, c, detail):
        print(
            f"{name}: {fmt_s(t)} wall ({detail}) = {gflop / t:.1f} GFLOP/s; "
            f"CPU {fmt_s(c)} = {gflop / c:.1f} GFLOP/CPU-s"
        )

    line(
        "JAX  jit+vmap+scan ",
        tj,
        cj,
        f"runs {', '.join(fmt_s(w) for w, _ in runs['jax'])}; compile {fmt_s(t_compile)} excluded",
    )
    line("NumPy batched loop ", tn, cn, f"runs {', '.join(fmt_s(w) for w, _ in runs['np'])}")
    line("NumPy per-cell loop", t_pc, c_pc, f"extrapolated from {pc_steps} steps")
    print(
        f"speed-up JAX vs NumPy batched: {tn / tj:.2f}x wall, {cn / cj:.2f}x CPU time "
        f"(vs per-cell loop: {t_pc / tj:.2f}x wall); FLOPs: 6 d^3 per step per cell = {gflop:.1f} GFLOP in all"
    )
    print(f"final loss: mean {loss_np.mean():.4g} (from {loss_0.mean():.4g}); max rel diff JAX vs NumPy = {rel:.2e}")
    print()
    return dict(
        t_jax=tj,
        c_jax=cj,
        c_np=cn,
        t_np=tn,
        t_pc=t_pc,
        ratio=tn / tj,
        cpu_ratio=cn / cj,
        rel=rel,
        compile=t_compile,
        jax_cpu_gflops=gflop / cj,
        np_cpu_gflops=gflop / cn,
    )


def matmul_peak(repeats: int, n: int = 2048) -> dict:
    """float32 n x n matmul GFLOP/s (wall and per CPU-second) of jnp and of NumPy."""
    x = jax.random.normal(jax.random.PRNGKey(2), (n, n), F32)
    y = jax.random.normal(jax.random.PRNGKey(3), (n, n), F32)
    mm = jax.jit(jnp.matmul).lower(x, y).compile()
    xn, yn = np.asarray(x), np.asarray(y)
    mm(x, y).block_until_ready()
    xn @ yn
    runs = {"jax": [], "numpy": []}
    for _ in range(repeats):
        runs["jax"].append(timed(lambda: mm(x, y).block_until_ready()))
        runs["numpy"].append(timed(lambda: xn @ yn))
    flop = 2 * n**3 / 1e9
    res = {"n": n}
    for k, r in runs.items():
        res[k] = flop / statistics.median(w for w, _ in r)
        res[k + "_cpu"] = flop / statistics.median(c for _, c in r)
    return res


def bench_b(repeats: int, d: int = 256, cells: int = 32, n_steps: int = 10, lr: float = 0.1) -> dict:
    print(f"== (b) achieved GFLOP/s, same batched JAX GD at d = h = {d}, {cells} cells, {n_steps} steps ==")
    A, W0 = gd_problem(d, cells)
    t0 = time.perf_counter()
    compiled = jax_gd(A, lr, n_steps).lower(W0).compile()
    t_compile = time.perf_counter() - t0
    print(f"compiled step: {step_kernels(compiled)}")
    jax.block_until_ready(compiled(W0))  # warm-up
    peak = matmul_peak(repeats)
    runs = [timed(lambda: jax.block_until_ready(compiled(W0))) for _ in range(repeats)]
    t, c = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
    flop_step = 6 * d**3
    gflop = flop_step * cells * n_steps / 1e9
    best = max(peak["jax"], peak["numpy"])
    best_cpu = max(peak["jax_cpu"], peak["numpy_cpu"])
    print(
        f"FLOPs per GD step per cell: M = W2 W1 (2 d^3) + dW2 = R W1^T (2 d^3) + dW1 = W2^T R (2 d^3) "
        f"= 6 d^3 = {flop_step / 1e6:.1f} MFLOP (elementwise O(d^2) not counted)"
    )
    print(
        f"simulation: {fmt_s(t)} wall per {n_steps} steps x {cells} cells "
        f"(runs {', '.join(fmt_s(w) for w, _ in runs)}; "
        f"compile {fmt_s(t_compile)} excluded) = {gflop / t:.1f} GFLOP/s; {gflop / c:.1f} GFLOP/CPU-s"
    )
    print(
        f"float32 matmul peak ({peak['n']}^2): jnp {peak['jax']:.1f} GFLOP/s ({peak['jax_cpu']:.1f} /CPU-s), "
        f"numpy {peak['numpy']:.1f} GFLOP/s ({peak['numpy_cpu']:.1f} /CPU-s) -> peak {best:.1f} GFLOP/s"
    )
    print(f"fraction of peak: {gflop / t / best:.2f} wall-clock, {gflop / c / best_cpu:.2f} per CPU-second")
    print()
    return dict(
        gflops=gflop / t,
        peak=best,
        frac=gflop / t / best,
        frac_cpu=gflop / c / best_cpu,
        peak_jax=peak["jax"],
        peak_np=peak["numpy"],
        peak_cpu=best_cpu,
    )


# ------------------------------------------------------------------- (d) where one GD step's time goes

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


def orthogonal_batch(key: jax.Array, cells: int, d: int) -> jax.Array:
    """``cells`` random d x d orthogonal matrices: a chain of products with them neither grows nor decays,
    so a scan of matmuls alone runs on normal floats (no denormal slow path) without an elementwise op."""
    Q, _ = jnp.linalg.qr(jax.random.normal(key, (cells, d, d), F32))
    return Q


def scan_and_loop(jax_body, numpy_body, X, Xn, n_steps: int):
    """Callables running ``x <- body(x)`` ``n_steps`` times from X: a compiled JAX scan, a NumPy loop."""
    compiled = jax.jit(lambda x: jax.lax.scan(lambda c, _: (jax_body(c), None), x, None, length=n_steps)[0])
    compiled = compiled.lower(X).compile()

    def numpy_loop():
        x = Xn.copy()
        for _ in range(n_steps):
            x = numpy_body(x)

    return lambda: jax.block_until_ready(compiled(X)), numpy_loop


def cpu_per_call(jax_fn, numpy_fn, repeats: int) -> tuple[float, float]:
    """Median CPU seconds of ``jax_fn()`` and ``numpy_fn()`` (``interleaved``)."""
    runs = interleaved({"jax": jax_fn, "numpy": numpy_fn}, repeats)
    return runs["jax"][1], runs["numpy"][1]


def profile_ops(d: int, cells: int, n_steps: int, repeats: int) -> list[dict]:
    """Per-op CPU time of the pieces of one batched GD step, JAX (a scan of that op alone) vs NumPy (a loop).

    The three GEMM forms of the step (M = W2 W1: NN; dW2 = R W1^T: NT; dW1 = W2^T R: TN) each as
    x <- Q x (with Q orthogonal, so nothing else is computed); the update W <- W - lr g and the loss
    1/2 ||R||^2 as elementwise work per step; and the whole step for reference.
    """
    Q = orthogonal_batch(jax.random.PRNGKey(4), cells, d)
    X = orthogonal_batch(jax.random.PRNGKey(5), cells, d)
    Qn, Xn = np.asarray(Q), np.asarray(X)
    lr = np.float32(0.1)
    swap = lambda x: jnp.swapaxes(x, -1, -2)  # noqa: E731
    A, W0 = gd_problem(d, cells)
    ops = [  # (name, GFLOP per step or None, JAX body x -> x, NumPy body x -> x)
        ("GEMM M = W2 W1 (NN)", 2 * d**3 * cells / 1e9, lambda x: Q @ x, lambda x: Qn @ x),
        ("GEMM dW2 = R W1^T (NT)", 2 * d**3 * cells / 1e9, lambda x: Q @ swap(x), lambda x: Qn @ x.transpose(0, 2, 1)),
        ("GEMM dW1 = W2^T R (TN)", 2 * d**3 * cells / 1e9, lambda x: swap(Q) @ x, lambda x: Qn.transpose(0, 2, 1) @ x),
        ("update W - lr g", None, lambda x: x - lr * Q, lambda x: x - lr * Qn),
        (
            "loss 1/2 ||R||^2 (+ R)",
            None,
            lambda x: x * (1 - 1e-9 * jnp.sum((x - Q) ** 2)),
            lambda x: x * np.float32(1 - 1e-9 * np.sum((x - Qn) ** 2)),
        ),
    ]
    rows = []
    for name, gflop, jax_body, numpy_body in ops:
        cj, cn = cpu_per_call(*scan_and_loop(jax_body, numpy_body, X, Xn, n_steps), repeats)
        rows.append(dict(op=name, gflop=gflop, jax_us=cj / n_steps * 1e6, np_us=cn / n_steps * 1e6))
    # The whole step, the same sizes: simulate.train vs the NumPy loop of (a).
    compiled = jax_gd(A, float(lr), n_steps).lower(W0).compile()
    A_np = np.asarray(A)
    cj, cn = cpu_per_call(
        lambda: jax.block_until_ready(compiled(W0)), lambda: numpy_gd(A_np, W0, float(lr), n_steps), repeats
    )
    rows.append(
        dict(op="whole step", gflop=6 * d**3 * cells / 1e9, jax_us=cj / n_steps * 1e6, np_us=cn / n_steps * 1e6)
    )
    return rows


def bench_d(repeats: int, d: int = 64, cells: int = 32, n_steps: int = 400) -> dict:
    """Run ``profile_ops`` in a child process per thread setting (thread pools are fixed at start-up)."""
    print(f"== (d) one GD step of (a) op by op, d = {d}, {cells} cells, CPU time per step (median of {repeats}) ==")
    out = {}
    for setting, env in THREAD_SETTINGS.items():
        rows, flags = in_child(f"profile_ops({d}, {cells}, {n_steps}, {repeats})", **env)
        out[setting] = rows
        print(f"-- {setting} (XLA_FLAGS={flags or '<unset>'}) --")
        print(
            f"{'op':28s} {'JAX us':>9s} {'NumPy us':>9s} {'JAX GF/CPU-s':>13s} {'NumPy GF/CPU-s':>15s} "
            f"{'NumPy/JAX':>10s}"
        )
        for r in rows:
            gj = f"{r['gflop'] / r['jax_us'] * 1e6:.1f}" if r["gflop"] else "-"
            gn = f"{r['gflop'] / r['np_us'] * 1e6:.1f}" if r["gflop"] else "-"
            print(
                f"{r['op']:28s} {r['jax_us']:9.1f} {r['np_us']:9.1f} {gj:>13s} {gn:>15s} "
                f"{r['np_us'] / r['jax_us']:9.2f}x"
            )
    print()
    return out


# ---------------------------------------------------------- (f) XLA CPU options that choose the kernels

KERNEL_OPTIONS = {
    "XLA defaults (dots via YNNPACK where it takes them)": "",
    "YNNPACK off (every dot via Eigen)": "--xla_cpu_experimental_ynn_fusion_type=",
    "XNNPACK on": "--xla_cpu_use_xnnpack=true",
    "oneDNN on": "--xla_cpu_use_onednn=true",
}


def step_cost(d: int, cells: int, n_steps: int, repeats: int) -> dict:
    """The kernels of (a)'s compiled step and its median CPU time per step (this process's XLA options)."""
    A, W0 = gd_problem(d, cells)
    compiled = jax_gd(A, 0.1, n_steps).lower(W0).compile()
    _, cpu, _ = interleaved({"jax": lambda: compiled(W0)}, repeats)["jax"]
    return {"kernels": step_kernels(compiled), "us": cpu / n_steps * 1e6}


def bench_f(repeats: int, d: int = 64, cells: int = 32, n_steps: int = 500) -> dict:
    print(f"== (f) (a)'s step under the pinned jaxlib's kernel options, CPU time per step (median of {repeats}) ==")
    out = {}
    for name, flags in KERNEL_OPTIONS.items():
        out[name], _ = in_child(f"step_cost({d}, {cells}, {n_steps}, {repeats})", xla_flags=flags)
        print(f"{name:52s} {out[name]['us']:7.0f} us  ({out[name]['kernels']}; XLA_FLAGS={flags or '<none>'})")
    print()
    return out


# ------------------------------------------------------- (e) the general-case presets' size: SGD and Adam


def numpy_minibatch(W0, X, Y, opt: str, lr: float, b1=0.9, b2=0.999, eps=1e-8):
    """Plain NumPy minibatch training of the 2-layer linear net, batched over cells (axis 0).

    Loss 1/(2b) sum_j ||M x_j - y_j||^2 with M = W2 W1: E = X M^T - Y, G = E^T X / b = dL/dM,
    dW2 = G W1^T, dW1 = W2^T G; SGD, or Adam as optax.adam (bias-corrected moments, eps outside the root).
    """
    W = [np.array(W0[0]), np.array(W0[1])]
    m = [np.zeros_like(w) for w in W]
    v = [np.zeros_like(w) for w in W]
    b = X.shape[1]
    for t in range(X.shape[0]):
        M = W[1] @ W[0]
        E = X[t] @ M.transpose(0, 2, 1) - Y[t]  # (cells, b, d_out)
        G = E.transpose(0, 2, 1) @ X[t] / np.float32(b)
        grads = [W[1].transpose(0, 2, 1) @ G, G @ W[0].transpose(0, 2, 1)]
        for k in range(2):
            if opt == "sgd":
                W[k] -= np.float32(lr) * grads[k]
            else:
                m[k] = np.float32(b1) * m[k] + np.float32(1 - b1) * grads[k]
                v[k] = np.float32(b2) * v[k] + np.float32(1 - b2) * grads[k] ** 2
                m_hat = m[k] / np.float32(1 - b1 ** (t + 1))
                v_hat = v[k] / np.float32(1 - b2 ** (t + 1))
                W[k] -= np.float32(lr) * m_hat / (np.sqrt(v_hat) + np.float32(eps))
    return W


def minibatch_run(W, X, Y, tx, n_steps: int):
    """``simulate.train`` on given batches (X, Y): the minibatch objective with its draws taken out."""
    objective = simulate.Objective(lambda W, batch: network.sample_loss(W, *batch), lambda _key, _n: (X, Y))
    return simulate.train(objective, W, tx, n_steps, n_steps)


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


def bench_e(repeats: int, d: int = 32, cells: int = 8, n_steps: int = 1000, batch: int = 512) -> dict:
    print(
        f"== (e) the general-case presets' size: minibatch SGD and Adam, d = h = {d}, batch {batch}, "
        f"{n_steps} steps, {cells} cells (batches drawn once, outside the timing, shared by both) =="
    )
    A, W0 = gd_problem(d, cells, sigma=1e-3)
    X = jax.random.normal(jax.random.PRNGKey(6), (n_steps, batch, d), F32)
    Y = X @ A.T + 0.1 * jax.random.normal(jax.random.PRNGKey(7), (n_steps, batch, d), F32)
    Xn, Yn, A_np = np.asarray(X), np.asarray(Y), np.asarray(A)
    out = {}
    for opt, lr in (("sgd", 0.05), ("adam", 0.01)):
        tx = optax.sgd(lr) if opt == "sgd" else optax.adam(lr)
        compiled = jax.jit(jax.vmap(partial(minibatch_run, tx=tx, n_steps=n_steps), in_axes=(0, None, None)))
        compiled = compiled.lower(W0, X, Y).compile()
        numpy_minibatch(W0, Xn[:20], Yn[:20], opt, lr)  # warm-up
        runs = interleaved(
            {"jax": lambda c=compiled: c(W0, X, Y), "np": lambda o=opt, r=lr: numpy_minibatch(W0, Xn, Yn, o, r)},
            repeats,
        )
        (tj, cj, Wj), (tn, cn, Wn) = runs["jax"], runs["np"]
        loss_j = np_loss(np.asarray(Wj[0][:, -1]), np.asarray(Wj[1][:, -1]), A_np)
        loss_n = np_loss(*Wn, A_np)
        rel = float(np.max(np.abs(loss_j - loss_n) / np.abs(loss_n)))
        out[opt] = dict(t_jax=tj, t_np=tn, c_jax=cj, c_np=cn, rel=rel)
        print(
            f"{opt:5s}: JAX {fmt_s(tj)} wall / {fmt_s(cj)} CPU; NumPy {fmt_s(tn)} wall / {fmt_s(cn)} CPU; "
            f"JAX vs NumPy {tn / tj:.2f}x wall, {cn / cj:.2f}x CPU time; final task-loss rel diff {rel:.1e}"
        )
    print()
    return out


# ---------------------------------------------------------------------- (c) closed form vs simulation


def bench_c(repeats: int, d: int = 32, cells: int = 4, u0: float = 1e-6, n_T: int = 61, dt_max: float = 0.25) -> dict:
    # dt_max = 0.25 is the largest RK4 step of 1, 0.5, 0.25 whose curve matches the closed form to < 1e-4
    # (0.5: 5e-4, 1.0: 4e-3): the cheapest accurate simulation, so the ratio is not inflated by a tiny step.
    print(
        f"== (c) L_A(T), aligned balanced 2-layer, d = h = {d}, power-law spectrum, u0 = {u0:g}, "
        f"{n_T} log-spaced T in [0.1, 1e4], {cells} cells (random teacher rotations) =="
    )
    s = tasks.power_law_spectrum(d).astype(F32)
    T = jnp.logspace(-1, 4, n_T, dtype=F32)
    teachers = [tasks.teacher(jax.random.PRNGKey(10 + c), s, d, d) for c in range(cells)]
    U = jnp.stack([t.U for t in teachers]).astype(F32)
    V = jnp.stack([t.V for t in teachers]).astype(F32)
    S = jnp.broadcast_to(s, (cells, d))

    def closed(sv):
        return closed_form.loss_from_strengths(sv, closed_form.mode_strength(sv, u0, T[:, None]))

    def simulated(Uc, Vc):
        A = (Uc * s) @ Vc.T
        Ws = simulate.gradient_flow(
            lambda W: network.task_loss(W, A), network.init_aligned_balanced(Uc, Vc, u0, d), T, dt_max
        )
        return jax.vmap(network.task_loss, in_axes=(0, None))(Ws, A)

    f_cf = jax.jit(jax.vmap(closed)).lower(S).compile()
    t0 = time.perf_counter()
    f_sim = jax.jit(jax.vmap(simulated)).lower(U, V).compile()
    t_compile = time.perf_counter() - t0
    L_cf = np.asarray(f_cf(S).block_until_ready())
    t_cf, _ = median_time(lambda: f_cf(S).block_until_ready(), max(20, 10 * repeats))
    out = {}
    t_sim, ts = median_time(lambda: out.__setitem__("L", f_sim(U, V).block_until_ready()), repeats)
    L_sim = np.asarray(out["L"])

    L0 = L_cf[:, :1]
    abs_rel = float(np.max(np.abs(L_sim - L_cf) / L0))
    mask = L_cf >= 1e-4 * L0  # below ~1e-4 L(0) the float32 simulation sits at its rounding floor
    rel = float(np.max(np.abs(L_sim - L_cf)[mask] / L_cf[mask]))
    n_rk4 = int(np.sum(np.maximum(np.ceil(np.diff(np.concatenate([[0.0], np.asarray(T, np.float64)])) / dt_max), 1)))
    print(f"closed form (jit+vmap): {fmt_s(t_cf)} per call (median of {max(20, 10 * repeats)})")
    print(
        f"gradient flow, RK4 dt_max = {dt_max} ({n_rk4} steps to T = 1e4): {fmt_s(t_sim)} "
        f"(runs {', '.join(fmt_s(x) for x in ts)}; compile {fmt_s(t_compile)} excluded)"
    )
    print(
        f"agreement: max |dL|/L(0) = {abs_rel:.2e} over all T; max rel diff = {rel:.2e} where L >= 1e-4 L(0) "
        f"({int(mask.sum())}/{mask.size} points)"
    )
    print(f"time ratio simulated / closed form: {t_sim / t_cf:.3g}x")
    print()
    return dict(t_cf=t_cf, t_sim=t_sim, ratio=t_sim / t_cf, rel=rel, abs_rel=abs_rel, cells=cells)


# ------------------------------------------------------------------------------------------------ main


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat of each measurement (sizes unchanged)")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else 3
    t_start = time.perf_counter()
    print_machine()

    a = bench_a(repeats)
    b = bench_b(repeats)
    c = bench_c(1)  # one ~10-20 s simulation: the closed form is ~1e5x faster, repeats would not change the verdict
    d = bench_d(repeats)
    e = bench_e(repeats)
    f = bench_f(repeats)

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    frac_np = b["gflops"] / b["peak_np"]
    print("== summary (paste into README) ==")
    print(f"cpu: {cpu_model()}; XLA options in force: {os.environ.get('XLA_FLAGS') or 'none (XLA defaults)'}")
    print("| metric | ours | baseline | ratio | target | met? |")
    print("|---|---|---|---|---|---|")
    print(
        f"| (a) GD 2-layer d=64, 2000 steps, 32 cells: CPU time (wall in brackets; final-loss rel diff "
        f"{a['rel']:.0e}) | JAX jit+vmap+scan {fmt_s(a['c_jax'])} ({fmt_s(a['t_jax'])}) "
        f"| NumPy batched matmul loop {fmt_s(a['c_np'])} ({fmt_s(a['t_np'])}) "
        f"| {a['cpu_ratio']:.2f}x ({a['ratio']:.2f}x wall) | >= 1.0x in CPU time | {met(a['cpu_ratio'] >= 1)} |"
    )
    print(
        f"| (b) batched GD d=h=256, 32 cells: achieved float32 GFLOP/s (6 d^3 per step per cell) "
        f"| {b['gflops']:.1f} GFLOP/s | NumPy 2048^2 GEMM peak {b['peak_np']:.1f} GFLOP/s (jnp {b['peak_jax']:.1f}) "
        f"| {frac_np:.2f} of NumPy's peak ({b['gflops'] / b['peak_jax']:.2f} of jnp's) | >= 0.7 of NumPy's "
        f"| {met(frac_np >= 0.7)} |"
    )
    print(
        f"| (c) L_A(T), 61 T in [0.1, 1e4], d=h=32, {c['cells']} cells (rel diff {c['rel']:.0e}) "
        f"| closed form {fmt_s(c['t_cf'])} | RK4 gradient flow {fmt_s(c['t_sim'])} | {c['ratio']:.3g}x "
        f"| >= 1000x | {met(c['ratio'] >= 1000)} |"
    )
    for opt, r in e.items():
        print(
            f"| (e) minibatch {opt.upper()} d=32, batch 512, 1000 steps, 8 cells: CPU time (rel diff {r['rel']:.0e}) "
            f"| JAX {fmt_s(r['c_jax'])} | NumPy loop {fmt_s(r['c_np'])} | {r['c_np'] / r['c_jax']:.2f}x "
            f"({r['t_np'] / r['t_jax']:.2f}x wall) | >= 1.0x | {met(r['c_np'] >= r['c_jax'])} |"
        )
    default = next(iter(f.values()))["us"]
    print(
        "(f) CPU time per step relative to XLA's defaults: "
        + ", ".join(f"{name.split(' (')[0]} {r['us'] / default:.2f}" for name, r in f.items())
    )
    for setting, rows in d.items():
        step = rows[-1]
        gemms = ", ".join(
            f"{r['op'][-3:-1]} {r['gflop'] / r['jax_us'] * 1e6:.0f} vs {r['gflop'] / r['np_us'] * 1e6:.0f}"
            for r in rows
            if r["op"].startswith("GEMM")
        )
        print(
            f"(d) {setting}: GEMM GFLOP per CPU-s JAX vs NumPy: {gemms}; whole step {step['jax_us']:.0f} us vs "
            f"{step['np_us']:.0f} us ({step['np_us'] / step['jax_us']:.2f}x); CPU-s peak {b['peak_cpu']:.0f}"
        )
    print()
    print(
        f"total runtime: {time.perf_counter() - t_start:.1f} s ({'--quick' if args.quick else 'full'}); "
        f"load average now {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()

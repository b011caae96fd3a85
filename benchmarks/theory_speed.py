"""Speed of the JAX linear-network simulator (`theory/`) against plain NumPy and against the closed form.

Run: ``python benchmarks/theory_speed.py [--quick]`` (``make bench``). One run prints, side by side:

(a) full-batch GD on a two-layer linear network, d_in = h = d_out = 64, 2,000 steps, 32 cells
    (32 random inits, vmapped): ``jit(vmap(theory.simulate.train))`` with ``optax.sgd`` (lax.scan over
    steps) vs a plain NumPy loop over steps with batched ``np.matmul`` over the 32 cells. Target >= 2x.
(b) achieved GFLOP/s of the same batched JAX simulation at d = h = 256, counting 6 d^3 FLOPs per GD
    step per cell (three d x d x d matmuls, 2 d^3 each; the O(d^2) elementwise work is not counted),
    as a fraction of this machine's measured float32 matmul peak (max of jnp and NumPy 2048^2 matmul).
    Target >= 0.5.
(c) the L_A(T) curve of an aligned balanced two-layer network (d = h = 32, power-law spectrum,
    u0 = 1e-6, 61 log-spaced T in [0.1, 1e4], vmapped over cells) from the closed form
    ``closed_form.mode_strength`` vs ``simulate.gradient_flow`` (RK4) on the full matrices. Target >= 1000x.

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
import os
import platform
import re
import statistics
import sys
import time
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


def print_machine() -> None:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
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

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    # Wall time is the target's measure; when only it clears 2x, say so (it swings with the machine's load).
    met_a = met(a["ratio"] >= 2) + (" (wall only)" if a["ratio"] >= 2 > a["cpu_ratio"] else "")
    print("== summary (paste into README) ==")
    print("| metric | ours | baseline | ratio | target | met? |")
    print("|---|---|---|---|---|---|")
    print(
        f"| (a) GD 2-layer d=64, 2000 steps, 32 cells: wall time (final-loss rel diff {a['rel']:.0e}) "
        f"| JAX jit+vmap+scan {fmt_s(a['t_jax'])} | NumPy batched matmul loop {fmt_s(a['t_np'])} "
        f"(per-cell loop {fmt_s(a['t_pc'])}) | {a['ratio']:.2f}x ({a['cpu_ratio']:.2f}x in CPU time) "
        f"| >= 2x | {met_a} |"
    )
    print(
        f"| (b) batched GD d=h=256, 32 cells: achieved float32 GFLOP/s (6 d^3 per step per cell) "
        f"| {b['gflops']:.1f} GFLOP/s | measured matmul peak {b['peak']:.1f} GFLOP/s "
        f"(jnp {b['peak_jax']:.1f}, numpy {b['peak_np']:.1f}) | {b['frac']:.2f} ({b['frac_cpu']:.2f} per CPU-s) "
        f"| >= 0.5 | {met(b['frac'] >= 0.5)} |"
    )
    print(
        f"| (c) L_A(T), 61 T in [0.1, 1e4], d=h=32, {c['cells']} cells (rel diff {c['rel']:.0e}) "
        f"| closed form {fmt_s(c['t_cf'])} | RK4 gradient flow {fmt_s(c['t_sim'])} | {c['ratio']:.3g}x "
        f"| >= 1000x | {met(c['ratio'] >= 1000)} |"
    )
    if a["cpu_ratio"] < 2:
        print(
            f"(a) is matmul-bound on both sides (three batched 64^3 GEMMs per step; NumPy's Python overhead is ~4 "
            f"calls per ~1 ms GEMM): JAX runs at {a['jax_cpu_gflops']:.1f} GFLOP/CPU-s, NumPy at "
            f"{a['np_cpu_gflops']:.1f}, the 2048^2 matmul peak is {b['peak_cpu']:.1f} GFLOP/CPU-s, so even a "
            f"JAX at peak would be {b['peak_cpu'] / a['np_cpu_gflops']:.1f}x NumPy in CPU time."
        )
    print()
    print(
        f"total runtime: {time.perf_counter() - t_start:.1f} s ({'--quick' if args.quick else 'full'}); "
        f"load average now {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()

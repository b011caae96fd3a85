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
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/theory_speed.py` from anywhere

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.gd_problems import (
    F32,
    gd_problem,
    jax_gd,
    minibatch_run,
    np_loss,
    numpy_gd,
    numpy_gd_per_cell,
    numpy_minibatch,
)
from benchmarks.theory_profile import bench_d, bench_f
from benchmarks.timing import (
    cpu_model,
    fmt_s,
    interleaved,
    median_time,
    print_machine,
    step_kernels,
    timed,
)
from theory import closed_form, network, simulate, tasks  # noqa: E402

# ----------------------------------------------------------------------------------------------- helpers


# ----------------------------------------------------------------------------------- (a) and (b): GD


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


# ---------------------------------------------------------- (f) XLA CPU options that choose the kernels


# ------------------------------------------------------- (e) the general-case presets' size: SGD and Adam


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

"""Where the theory benchmark's GD step spends its time (sections d and f of
benchmarks/theory_speed.py): each op of one step alone, under the default threads and one thread,
and the step under each kernel option of the pinned jaxlib, each in a child process.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.gd_problems import (
    gd_problem,
    jax_gd,
    numpy_gd,
    orthogonal_batch,
    scan_and_loop,
)
from benchmarks.timing import (
    THREAD_SETTINGS,
    cpu_per_call,
    in_child,
    interleaved,
    step_kernels,
)


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

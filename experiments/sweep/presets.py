"""Named presets, one per figure (``ovt theory --list``). ``quick`` variants shrink grids, not physics.

Default setup (docs/THEORY.md): d_in = h = d_out = 32, s_i = 1/i, u0 = 1e-6, B with the reversed spectrum,
noise scale sigma_k = 1/sqrt(32) (the std a 1/sqrt(fan-in) Gaussian init would have).
"""

from __future__ import annotations

import dataclasses
import textwrap

import numpy as np

from experiments.sweep.config import TheoryConfig

SIGMA = 32**-0.5
BASE = TheoryConfig(init_std=SIGMA, n_t=81)
# Optimizer-trained budget series from a small random (not aligned) init; noise of the default size.
SERIES = dataclasses.replace(
    BASE, method="series", init="gaussian", init_std=1e-3, noise_scale="absolute", noise_sigma=SIGMA
)


# Minibatch SGD budget series at d = 16 with label noise 0.1, 3 seeds: the schedule comparisons.
SCHEDULE = dataclasses.replace(
    SERIES,
    d_in=16,
    h=16,
    d_out=16,
    rank=16,
    optimizer="sgd",
    pretrain_lr=0.1,
    batch_size=16,
    label_noise=0.1,
    budgets=(50, 100, 200, 400, 800, 1600, 3200, 6400),
    lr=0.02,
    grid=(("series_mode", ("separate", "single")), ("seed", (0, 1, 2))),
)


def log_values(low: float, high: float, n: int) -> tuple[float, ...]:
    """``n`` log-spaced grid values from ``low`` to ``high``, rounded to 4 significant digits."""
    return tuple(float(f"{v:.4g}") for v in np.logspace(np.log10(low), np.log10(high), n))


PRESETS: dict[str, TheoryConfig] = {
    "smoke": dataclasses.replace(
        BASE, d_in=8, h=8, d_out=8, rank=8, n_t=25, t_max=300.0, grid=(("gamma", (0.3, 0.5)),)
    ),
    "gaussian": dataclasses.replace(BASE, grid=(("gamma", (0.15, 0.2, 0.3, 0.4, 0.6)),)),
    "finetune": dataclasses.replace(BASE, grid=(("lr", (0.005, 0.01, 0.02, 0.04, 0.08)),)),
    "regularization": dataclasses.replace(BASE, lr=0.02, grid=(("reg", (0.0, 0.1, 0.3, 1.0, 3.0)),)),
    "tuned_lr": dataclasses.replace(
        BASE,
        tuned_lr=True,
        steps=100,
        shrink_t_ref=10.0,
        shrink_power=1.0,
        grid=(("lr_policy", ("fixed", "shrinking")), ("lr", (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08))),
    ),
    # A tuned lr that means something: fine-tuning by GD on 64 noisy samples of B (label noise 0.5),
    # the lr of each T chosen on the held-out (population) L_B, so large rates overfit and lose.
    "tuned_finite": dataclasses.replace(
        BASE,
        method="flow",
        t_max=2000.0,
        n_t=41,
        tuned_lr=True,
        finetune_samples=64,
        finetune_label_noise=0.5,
        grid=(("lr", (0.005, 0.01, 0.02, 0.04, 0.08, 0.16)),),
    ),
    # lr(T) = lr0 (1 + T/T0)^-q: q = 0 is the fixed lr; at T0 = 1000 a slow shrink delays T*, a fast one removes it.
    "shrinking": dataclasses.replace(
        BASE, lr=0.08, lr_policy="shrinking", shrink_t_ref=1000.0, grid=(("shrink_power", (0.0, 0.25, 0.5, 1.0)),)
    ),
    "depth": dataclasses.replace(
        BASE, u0=1e-3, gamma=0.3, n_t=49, t_max=3e3, dt_max=0.1, grid=(("depth", (1, 2, 3, 4)),)
    ),
    "misalignment": dataclasses.replace(
        BASE,
        method="flow",
        d_in=32,
        h=32,
        d_out=32,
        rank=16,
        t_max=400.0,
        n_t=41,
        dt_max=0.05,
        finetune_task="rotated",
        grid=(("theta", (0.0, 0.25, 0.5, 1.0, 1.5)),),
    ),
    # The T*(lr) and T*(gamma) landscapes: 64 values per axis, every local minimum (figure ``landscape``).
    "landscape": dataclasses.replace(BASE, n_t=97, grid=(("lr", log_values(0.005, 0.16, 64)),)),
    "landscape_gamma": dataclasses.replace(BASE, n_t=97, grid=(("gamma", log_values(0.1, 0.8, 64)),)),
    # T*(gamma, alpha): the Gaussian T* over noise size and spectrum exponent, with its prediction.
    "landscape_alpha": dataclasses.replace(
        BASE, n_t=65, grid=(("alpha", log_values(0.5, 2.0, 32)), ("gamma", log_values(0.1, 0.8, 32)))
    ),
    # The general case: random (not aligned) init, minibatch SGD vs near-full-batch GD vs Adam, 3 seeds.
    "general": dataclasses.replace(
        SERIES,
        pretrain_lr=0.05,
        label_noise=0.1,
        budgets=(50, 100, 200, 400, 800, 1600, 3200, 6400),
        lr=0.02,
        gamma=0.3,  # modes with s_i < 2 c gamma^2 = 0.18 (i >= 6) are net-harmful under noise
        grid=(("optimizer", ("sgd", "adam")), ("batch_size", (16, 512)), ("seed", (0, 1, 2))),
        chunk_size=1,  # a cell at batch 512 draws a 2.4 GB minibatch stream (``config.batch_stream_bytes``)
    ),
    "schedule": SCHEDULE,
    # Warmup-stable-decay at equal steps: ``single`` is the trunk (constant lr up to each checkpoint but
    # the last, where its own decay ends), ``separate`` a decay branch per budget (the trunk's batches,
    # decayed over the last 20%); with the Hessian's top eigenvalue and sigma-weighted trace.
    "anneal": dataclasses.replace(SCHEDULE, schedule="wsd", curvature=True),
    # Post-training quantization of the default setup's W(T): round-to-nearest and stochastic rounding.
    "quantization": dataclasses.replace(BASE, bits=8, grid=(("bits", (2, 3, 4, 5, 6, 7, 8)),)),
    # Multimodal adaptation: B = (c U + sqrt(1 - c^2) U_perp) diag(b) R^T read through a projector, stage 1
    # P alone, stage 2 P and W at the fine-tuning lr; d_out = 64 leaves room for B's outputs outside A's.
    "multimodal": dataclasses.replace(
        BASE, d_out=64, multimodal=True, grid=(("lr", (0.02, 0.08)), ("overlap", (0.0, 0.25, 0.5, 0.75, 1.0)))
    ),
    # Mitigations (docs/THEORY.md, "Mitigations"): forgetting and T* per strength, each closed-form one
    # beside the L2 pull reg = 0.3. Weight decay in pre-training: mode i heads for s_i - lambda, so
    # lambda kills the modes with s_i = 1/i <= lambda (i >= 1/lambda).
    "weight_decay": dataclasses.replace(
        BASE, grid=(("reg", (0.0, 0.3)), ("weight_decay", (0.0, 0.01, 0.03, 0.1, 0.3)))
    ),
    # Replay of A in fine-tuning: each mode heads for (1 - r) b_i + r s_i.
    "replay": dataclasses.replace(BASE, grid=(("reg", (0.0, 0.3)), ("replay", (0.0, 0.1, 0.3, 0.5)))),
    # SAM in pre-training (the schedule preset's separate cosine runs), with the sharpness beside; a
    # chunk a seed triple (no padded cell pays for a dense Hessian). From the init's scale (std 1e-3) an
    # ascent radius rho >~ 0.01 never leaves the saddle at W = 0 (docs/THEORY.md): the grid stops there.
    "sam": dataclasses.replace(
        SCHEDULE,
        curvature=True,
        chunk_size=3,
        grid=(("sam_rho", (0.0, 0.001, 0.003, 0.01)), ("seed", (0, 1, 2))),
    ),
    # The WSD decay's share of each budget: 0 = constant lr to the budget (no anneal).
    "anneal_fraction": dataclasses.replace(
        SCHEDULE,
        schedule="wsd",
        curvature=True,
        chunk_size=3,
        grid=(("anneal_fraction", (0.0, 0.1, 0.2, 0.5)), ("seed", (0, 1, 2))),
    ),
}

QUICK: dict[str, dict] = {
    "gaussian": dict(n_t=41, grid=(("gamma", (0.15, 0.3, 0.6)),)),
    "finetune": dict(n_t=41, grid=(("lr", (0.005, 0.02, 0.08)),)),
    "regularization": dict(n_t=41, grid=(("reg", (0.0, 0.3, 3.0)),)),
    "tuned_lr": dict(n_t=41, grid=(("lr_policy", ("fixed", "shrinking")), ("lr", (0.005, 0.02, 0.08)))),
    "shrinking": dict(n_t=41),
    "tuned_finite": dict(n_t=21, grid=(("lr", (0.01, 0.04, 0.16)),)),
    "depth": dict(n_t=25, grid=(("depth", (1, 2, 3)),)),
    "misalignment": dict(n_t=21, t_max=200.0, grid=(("theta", (0.0, 0.5, 1.5)),)),
    "general": dict(
        budgets=(50, 200, 800, 3200),
        grid=(("optimizer", ("sgd", "adam")), ("batch_size", (16, 512)), ("seed", (0, 1))),
    ),
    "landscape": dict(n_t=65, grid=(("lr", log_values(0.005, 0.16, 16)),)),
    "landscape_gamma": dict(n_t=65, grid=(("gamma", log_values(0.1, 0.8, 16)),)),
    "landscape_alpha": dict(n_t=41, grid=(("alpha", log_values(0.5, 2.0, 8)), ("gamma", log_values(0.1, 0.8, 8)))),
    "schedule": dict(budgets=(50, 200, 800, 3200), grid=(("series_mode", ("separate", "single")), ("seed", (0, 1)))),
    "anneal": dict(budgets=(50, 200, 800, 3200), grid=(("series_mode", ("separate", "single")), ("seed", (0, 1)))),
    "quantization": dict(n_t=41, grid=(("bits", (3, 4, 8)),)),
    "multimodal": dict(n_t=41, grid=(("lr", (0.02, 0.08)), ("overlap", (0.0, 0.5, 1.0)))),
    "weight_decay": dict(n_t=41, grid=(("reg", (0.0, 0.3)), ("weight_decay", (0.0, 0.03, 0.3)))),
    "replay": dict(n_t=41, grid=(("reg", (0.0, 0.3)), ("replay", (0.0, 0.1, 0.5)))),
    # The series' quick variants leave out the dense Hessian (seconds a checkpoint on 2 cores).
    "sam": dict(
        budgets=(50, 200, 800, 3200),
        curvature=False,
        chunk_size=2,
        grid=(("sam_rho", (0.0, 0.003, 0.01)), ("seed", (0, 1))),
    ),
    "anneal_fraction": dict(
        budgets=(50, 200, 800, 3200),
        curvature=False,
        chunk_size=2,
        grid=(("anneal_fraction", (0.0, 0.2, 0.5)), ("seed", (0, 1))),
    ),
}


# Presets ``ovt reproduce`` runs at their quick size even in a full reproduction (where
# ``ovt theory PRESET --quick`` writes them): the mitigations, whose full grids (and, for the series,
# dense Hessians) would add minutes to the main job.
REPRODUCED_QUICK = ("weight_decay", "replay", "sam", "anneal_fraction")


def get(name: str, quick: bool = False) -> TheoryConfig:
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} is unknown; allowed: {', '.join(PRESETS)}")
    cfg = PRESETS[name]
    return dataclasses.replace(cfg, **QUICK.get(name, {})) if quick else cfg


def describe(name: str) -> str:
    """The ``--list`` entry of a preset: its name and sweep, written as the override that sets it
    (``gamma=0.15,0.3``; a long log grid as its ends and count), then the fields it sets beside the
    default setup ``BASE``, then its quick variant's changes; every field once."""
    cfg = PRESETS[name]
    swept = dict(cfg.grid)
    sets = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in swept and f.name != "grid"}
    sets = {k: v for k, v in sets.items() if v != getattr(BASE, k)}
    lines = [f"{name:16s}sweeps {_fields(swept, sweep=True)}"]
    if sets:
        lines.append(f"{'':16s}sets {_fields(sets)}")
    if name in QUICK:
        quick = {k: v for k, v in QUICK[name].items() if k != "grid"}
        quick.update(dict(QUICK[name].get("grid", ())))
        lines.append(f"{'':16s}--quick: {_fields(quick, sweep=True)}")
    return "\n".join(textwrap.fill(line, 100, subsequent_indent=" " * 20, break_on_hyphens=False) for line in lines)


def _fields(fields: dict, sweep: bool = False) -> str:
    """``field=value`` pairs as an override writes them (tuples as comma lists); a sweep of more than
    8 values as its ends and count."""
    shown = []
    for k, v in fields.items():
        values = v if isinstance(v, tuple) else (v,)
        text = ",".join(_value(x) for x in values)
        if sweep and len(values) > 8:
            text = f"{_value(values[0])}..{_value(values[-1])} ({len(values)} values)"
        shown.append(f"{k}={text}")
    return " ".join(shown)


def _value(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)

"""Typed configuration of a theory sweep: one frozen dataclass covering every knob of ``theory/``.

A config holds scalar values; ``grid`` names the fields to sweep and their values, so any field can
be swept and any field can be overridden from the command line (``field=value``; tuples as ``a,b,c``).
Every value is checked when a config is made (``check``), whether it came from a preset, an override
text or Python: its type, finite and within float32 (the dtype the theory computes in), its range.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
import os
import typing
from typing import Any

import numpy as np

METHODS = ("closed_form", "flow", "series")
FINETUNE_TASKS = ("reversed", "permuted", "same", "rotated", "correlated")
SPECTRA = ("power_law", "exponential", "explicit")
INITS = ("aligned", "gaussian")
LR_POLICIES = ("fixed", "shrinking")
BITS = (2, 16)  # theory.quantization.MIN_BITS, MAX_BITS (not imported: a config loads without JAX)
MAX_CURVATURE_WEIGHTS = 4_096  # curvature=true forms the dense Hessian, weights^2 entries


def setting(default: Any, choices: tuple[str, ...] | None = None, least: str | None = None, most: int | None = None):
    """A config field and its bounds, declared once: one of ``choices``, ``least`` "> 0" or ">= 0", at
    most ``most`` (the upper bounds sit far above any figure's need and far below what would exhaust a
    24 GiB machine or run for days). ``check`` enforces them."""
    return dataclasses.field(default=default, metadata={"choices": choices, "least": least, "most": most})


@dataclasses.dataclass(frozen=True)
class TheoryConfig:
    """Every knob of a linear-network experiment. Times are flow times (GD: T = sum of lr over steps)."""

    # Pre-training task A = U diag(s) V^T.
    d_in: int = setting(32, least="> 0", most=4_096)
    h: int = setting(32, least="> 0", most=4_096)
    d_out: int = setting(32, least="> 0", most=4_096)
    rank: int = setting(32, least="> 0", most=4_096)
    spectrum: str = setting("power_law", choices=SPECTRA)
    s1: float = setting(1.0, least="> 0")
    alpha: float = setting(1.0, least=">= 0")
    rate: float = setting(0.1, least=">= 0")
    spectrum_values: tuple[float, ...] = ()
    task_seed: int = 0
    # Fine-tuning task B.
    finetune_task: str = setting("reversed", choices=FINETUNE_TASKS)
    theta: float = setting(0.0, least=">= 0")
    rho: float = 0.0
    # Network and initialisation.
    depth: int = setting(2, least="> 0", most=16)
    init: str = setting("aligned", choices=INITS)
    u0: float = setting(1e-6, least="> 0")
    init_std: float = setting(0.01, least="> 0")
    imbalance: float = 0.0
    # Pre-training: the closed form, matrix gradient flow, or an optax series of budgets.
    method: str = setting("closed_form", choices=METHODS)
    t_min: float = setting(0.1, least="> 0")
    t_max: float = setting(1e4, least="> 0")
    n_t: int = setting(61, least="> 0", most=10_000)
    dt_max: float = setting(0.02, least="> 0")
    optimizer: str = setting("sgd", choices=("sgd", "momentum", "adam", "adamw"))
    pretrain_lr: float = setting(0.05, least="> 0")
    schedule: str = setting("cosine", choices=("constant", "cosine", "wsd"))
    series_mode: str = setting("separate", choices=("separate", "single"))
    budgets: tuple[int, ...] = (100, 200, 400, 800, 1600, 3200)
    batch_size: int = setting(32, least="> 0", most=100_000)
    label_noise: float = setting(0.0, least=">= 0")
    # Pre-training mitigations: coupled L2 decay lambda/2 sum_k ||W_k||^2 (every method; closed form:
    # target s - lambda), SAM's ascent radius (series only), the WSD decay's share of a budget (wsd only).
    weight_decay: float = setting(0.0, least=">= 0")
    sam_rho: float = setting(0.0, least=">= 0")
    anneal_fraction: float = setting(0.2, least=">= 0")
    # Gaussian perturbation: noise std gamma * sigma_k, sigma_k = init std ("init") or noise_sigma.
    gamma: float = setting(0.2, least=">= 0")
    noise_scale: str = setting("init", choices=("init", "absolute"))
    noise_sigma: float = setting(0.0, least=">= 0")
    # Fine-tuning: tau = lr * steps, optional L2 pull ``reg`` toward W(T).
    lr: float = setting(0.02, least="> 0")
    steps: int = setting(100, least="> 0", most=1_000_000)
    reg: float = setting(0.0, least=">= 0")
    replay: float = setting(0.0, least=">= 0")  # fine-tune on (1 - replay) L_B + replay L_A, in [0, 1]
    lr_policy: str = setting("fixed", choices=LR_POLICIES)
    shrink_power: float = setting(1.0, least=">= 0")
    shrink_t_ref: float = setting(10.0, least="> 0")
    tuned_lr: bool = False
    # Fine-tuning data: 0 = the population L_B; n > 0 = GD on n samples of B with label noise (flow
    # and series runs), L_B after fine-tuning then being the held-out (population) loss.
    finetune_samples: int = setting(0, least=">= 0", most=100_000)
    finetune_label_noise: float = setting(0.0, least=">= 0")
    # Quantization (modification "quantization"): 0 = none; b in BITS = symmetric b-bit per-channel
    # round-to-nearest and stochastic rounding of every layer of W(T).
    bits: int = setting(0, least=">= 0", most=BITS[1])
    # Multimodal adaptation (modification "multimodal"): a modality z of dimension d_z read through a
    # projector x = P z, task B = (c U + sqrt(1 - c^2) U_perp) diag(b) R^T with c = overlap; stage 1 fits
    # P alone (projector_steps GD steps at projector_lr, in closed form), stage 2 P and every W_k (lr, steps).
    multimodal: bool = False
    overlap: float = setting(1.0, least=">= 0")
    d_z: int = setting(32, least="> 0", most=4_096)
    projector_lr: float = setting(0.1, least="> 0")
    projector_steps: int = setting(100, least=">= 0", most=1_000_000)
    # Curvature rows: the Hessian of L_A at W(T), its top eigenvalue and sigma-weighted trace (exact).
    curvature: bool = False
    seed: int = 0
    # Sweep: ((field, (v1, v2, ...)), ...); cells are the product.
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    chunk_size: int = setting(8, least="> 0", most=1_024)

    def __post_init__(self):
        check(self)


def _declared(key: str) -> dict[str, Any]:
    return {f.name: f.metadata[key] for f in dataclasses.fields(TheoryConfig) if f.metadata.get(key) is not None}


CHOICES = _declared("choices")
POSITIVE = tuple(name for name, least in _declared("least").items() if least == "> 0")
NON_NEGATIVE = tuple(name for name, least in _declared("least").items() if least == ">= 0")
UPPER = _declared("most")  # every size that multiplies into memory or time (docs/ARCHITECTURE.md, "Limits")
MAX_BUDGETS, MAX_BUDGET_STEPS = 64, 1_000_000  # a series' checkpoints, and the optimizer steps of its largest
MAX_CELLS = 100_000  # cells of one sweep
MAX_ODE_STEPS = 10_000_000  # t_max / dt_max where time is integrated (flow, depth != 2)
SEEDS = ("seed", "task_seed")  # seeds become PRNG keys: 0 .. 2**32 - 1 give distinct keys, x64 or not
MAX_SEED = 2**32 - 1
# Every float field is computed in float32: 0, or a magnitude from its smallest normal number to its largest.
FLOAT32_TINY, FLOAT32_MAX = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
MEMORY_FRACTION = 0.5  # refuse a run whose estimated peak exceeds this share of the machine's memory


def check(cfg: TheoryConfig) -> None:
    """Raise ValueError naming the first bad field and what is allowed (grid values included)."""
    variants = [cfg] if not cfg.grid else []  # every grid value once (not the product)
    if not isinstance(cfg.grid, tuple) or not all(isinstance(g, tuple) and len(g) == 2 for g in cfg.grid):
        raise ValueError(f"grid={cfg.grid!r} must be a tuple of (field, (value, ...)) pairs")
    for name, values in cfg.grid:
        if name not in FIELDS or name == "grid":
            raise ValueError(f"grid field {name!r} is unknown; allowed: {', '.join(sorted(FIELDS))}")
        if not isinstance(values, tuple):
            raise ValueError(f"grid field {name!r} has values {values!r}; allowed: a tuple of values")
        if not values:
            raise ValueError(f"grid field {name!r} has no values")
        for v in values:
            variants.append(dataclasses.replace(cfg, grid=(), **{name: v}))
    n_cells = math.prod(len(values) for _, values in cfg.grid)
    if n_cells > MAX_CELLS:
        raise ValueError(f"the grid has {n_cells:,} cells; allowed: <= {MAX_CELLS:,} in one sweep")
    for c in variants:
        _check_cell(c)
    _check_memory(cfg, n_cells)


def _check_cell(c: TheoryConfig) -> None:
    for name in FIELDS:
        if name != "grid":
            _check_value(name, getattr(c, name))
    for name, allowed in CHOICES.items():
        if getattr(c, name) not in allowed:
            raise ValueError(f"{name}={getattr(c, name)!r} is not allowed; choose one of: {', '.join(allowed)}")
    for name in POSITIVE:
        if not getattr(c, name) > 0:
            raise ValueError(f"{name}={getattr(c, name)!r} must be > 0")
    for name in NON_NEGATIVE:
        if not getattr(c, name) >= 0:
            raise ValueError(f"{name}={getattr(c, name)!r} must be >= 0")
    if not -1.0 <= c.rho <= 1.0:
        raise ValueError(f"rho={c.rho!r} must lie in [-1, 1]")
    _check_mitigations(c)
    if c.t_min >= c.t_max:
        raise ValueError(f"t_min={c.t_min} must be < t_max={c.t_max}")
    if c.rank > min(c.d_in, c.d_out) or c.rank > c.h:
        raise ValueError(f"rank={c.rank} must be <= min(d_in, d_out, h)={min(c.d_in, c.d_out, c.h)}")
    if c.method == "closed_form" and c.finetune_samples:
        raise ValueError(
            f"finetune_samples={c.finetune_samples} needs method=flow or series (the closed form is population GD)"
        )
    if c.method == "closed_form" and c.finetune_task in ("rotated", "correlated"):
        raise ValueError(f"finetune_task={c.finetune_task!r} is not aligned with A; use method=flow or series")
    if c.bits and not BITS[0] <= c.bits <= BITS[1]:
        raise ValueError(f"bits={c.bits!r} must be 0 (no quantization) or lie in [{BITS[0]}, {BITS[1]}]")
    _check_multimodal(c)
    if c.curvature and n_parameters(c) > MAX_CURVATURE_WEIGHTS:
        raise ValueError(
            f"curvature=true forms the dense Hessian of all {n_parameters(c):,} weights; allowed: <= "
            f"{MAX_CURVATURE_WEIGHTS:,} weights (lower d_in, h, d_out or depth)"
        )
    if c.n_t < 3:
        raise ValueError(f"n_t={c.n_t} must be >= 3 (an inflection needs three points)")
    for name, most in UPPER.items():
        if getattr(c, name) > most:
            raise ValueError(f"{name}={getattr(c, name)!r} is too large; allowed: <= {most:,}")
    for name in SEEDS:
        if not 0 <= getattr(c, name) <= MAX_SEED:
            raise ValueError(f"{name}={getattr(c, name)!r} must lie in [0, {MAX_SEED}] (a PRNG key's seed)")
    _check_spectrum(c)
    if c.method == "series":
        _check_budgets(c.budgets)
    if (c.method == "flow" or c.depth != 2) and c.t_max / c.dt_max > MAX_ODE_STEPS:
        raise ValueError(
            f"t_max / dt_max = {c.t_max:g} / {c.dt_max:g} integration steps; allowed: "
            f"<= {MAX_ODE_STEPS:,} (raise dt_max or lower t_max)"
        )


def _check_mitigations(c: TheoryConfig) -> None:
    for name in ("replay", "anneal_fraction"):
        if not getattr(c, name) <= 1.0:
            raise ValueError(f"{name}={getattr(c, name)!r} must lie in [0, 1]")
    if c.sam_rho and c.method != "series":
        raise ValueError(
            f"sam_rho={c.sam_rho!r} needs method=series (SAM is an optimizer step; method={c.method} has none)"
        )
    if c.anneal_fraction != FIELDS["anneal_fraction"].default and c.schedule != "wsd":
        raise ValueError(
            f"anneal_fraction={c.anneal_fraction!r} is read only with schedule=wsd (schedule={c.schedule})"
        )
    if c.replay and c.multimodal:
        raise ValueError(f"replay={c.replay!r} is not read by multimodal=true (its stage 2 fits B alone)")


def _check_spectrum(c: TheoryConfig) -> None:
    values = c.spectrum_values
    if c.spectrum != "explicit":
        if values:
            raise ValueError(
                f"spectrum_values={','.join(map(str, values))} is read only with spectrum=explicit "
                f"(spectrum={c.spectrum!r})"
            )
        return
    if not values:
        raise ValueError("spectrum_values is empty; spectrum=explicit needs a comma list of values > 0, descending")
    if any(v <= 0 for v in values) or list(values) != sorted(values, reverse=True):
        raise ValueError(f"spectrum_values={','.join(map(str, values))} must be > 0 and descending")
    if len(values) > min(c.d_in, c.d_out, c.h):
        raise ValueError(
            f"spectrum_values has {len(values)} values; allowed: <= min(d_in, d_out, h)={min(c.d_in, c.d_out, c.h)}"
        )


def _check_multimodal(c: TheoryConfig) -> None:
    if not 0.0 <= c.overlap <= 1.0:
        raise ValueError(f"overlap={c.overlap!r} must lie in [0, 1] (the cosine of B's angle to A's outputs)")
    if not c.multimodal:
        for name in MULTIMODAL:
            if getattr(c, name) != FIELDS[name].default:
                raise ValueError(f"{name}={getattr(c, name)!r} is read only with multimodal=true")
        return
    r = c.rank if c.spectrum != "explicit" else len(c.spectrum_values)
    if c.d_z < r:
        raise ValueError(f"d_z={c.d_z} must be >= the task rank {r} (B reads r independent directions of z)")
    if c.overlap < 1 and c.d_out < 2 * r:
        raise ValueError(
            f"overlap={c.overlap!r} needs d_out >= 2 x rank = {2 * r} (room for B's outputs outside A's); "
            f"d_out={c.d_out} allows only overlap=1"
        )
    if c.finetune_samples:
        raise ValueError(f"finetune_samples={c.finetune_samples} is not read by multimodal=true (population L_B)")


def _check_budgets(budgets: tuple[int, ...]) -> None:
    shown = ",".join(map(str, budgets))
    if not budgets:
        raise ValueError("budgets is empty; method=series needs a comma list of step counts >= 1, increasing")
    if len(budgets) > MAX_BUDGETS:
        raise ValueError(f"budgets has {len(budgets)} values; allowed: <= {MAX_BUDGETS}")
    if budgets[0] < 1 or any(b >= a for a, b in zip(budgets[1:], budgets)):
        raise ValueError(f"budgets={shown} must be step counts >= 1, strictly increasing")
    if budgets[-1] > MAX_BUDGET_STEPS:
        raise ValueError(f"budgets={shown}: the largest is {budgets[-1]:,} steps; allowed: <= {MAX_BUDGET_STEPS:,}")


def n_parameters(c: TheoryConfig) -> int:
    """Entries of the weight matrices W_1 ... W_L (widths d_in, h, ..., h, d_out)."""
    return c.d_in * c.h + (c.depth - 2) * c.h * c.h + c.h * c.d_out if c.depth > 1 else c.d_in * c.d_out


def batch_stream_bytes(c: TheoryConfig) -> int:
    """A ``series`` cell's minibatch stream, drawn whole before its scan: x, the label noise and y for
    every step up to the largest budget, 3 x 4 bytes an entry of max(budgets) x batch_size x (d_in +
    d_out); measured 2.4 GB a cell of ``general`` (6,400 steps x 512 x 64), 11.5 bytes an entry."""
    return 12 * max(c.budgets) * c.batch_size * (c.d_in + c.d_out) if c.method == "series" else 0


def estimate_bytes(cfg: TheoryConfig, n_cells: int) -> int:
    """A conservative peak-memory estimate of a sweep: one chunk's weights (with ``multimodal`` the
    projector too) at every checkpoint and every noise draw (8 bytes an entry), a chunk's minibatch
    streams (``batch_stream_bytes``; a chunk holds at most min(chunk_size, cells) cells), with ``curvature`` a
    chunk's dense Hessians and their eigensolver's work (3 x 8 bytes a weight pair, one time point at a
    time), plus the long-form table (about 200 bytes a row, ~6 rows a time point)."""
    every = cells(cfg) if cfg.grid else [cfg]
    widest = max(every, key=n_parameters)
    points = len(widest.budgets) if widest.method == "series" else widest.n_t
    chunk = min(cfg.chunk_size, n_cells)
    hessians = 24 * chunk * n_parameters(widest) ** 2 if widest.curvature else 0
    weights = n_parameters(widest) + (widest.d_in * widest.d_z if widest.multimodal else 0)  # the projector P
    streams = chunk * max(map(batch_stream_bytes, every))
    return int(8 * chunk * points * weights + streams + hessians + 200 * 6 * points * n_cells)


def _check_memory(cfg: TheoryConfig, n_cells: int) -> None:
    need, have = estimate_bytes(cfg, n_cells), _machine_memory()
    if have and need > MEMORY_FRACTION * have:
        raise ValueError(
            f"this sweep needs an estimated {need / 2**30:.1f} GiB; this machine has {have / 2**30:.1f} GiB "
            f"(allowed: <= {MEMORY_FRACTION:.0%}); lower n_t, chunk_size, widths or the grid"
        )


def _machine_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TheoryConfig)}
MULTIMODAL = ("overlap", "d_z", "projector_lr", "projector_steps")  # read only with multimodal=true
HINTS = typing.get_type_hints(TheoryConfig)  # field -> its type (tuple[float, ...] for a list field)
_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _is(kind, v) -> bool:
    """Whether ``v`` is a value of a field of type ``kind`` (an int is a number; a bool is no number)."""
    if kind is bool or kind is str:
        return isinstance(v, kind)
    number = numbers.Integral if kind is int else numbers.Real
    return isinstance(v, number) and not isinstance(v, (bool, np.bool_))


def _check_value(name: str, value) -> None:
    """Refuses a value of another type than field ``name``'s (a tuple field: a tuple of them), a float
    that is not finite, and a nonzero float outside float32's range (it would overflow or flush to zero)."""
    hint = HINTS[name]
    kind = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else hint
    if typing.get_origin(hint) is tuple and not isinstance(value, tuple):
        raise ValueError(f"{name}={value!r} must be a tuple of values, each {_KINDS[kind]}")
    for v in value if typing.get_origin(hint) is tuple else (value,):
        if not _is(kind, v):
            raise ValueError(f"{name}={v!r} must be {_KINDS[kind]}")
        if kind is float and not math.isfinite(v):
            raise ValueError(f"{name}={v!r} must be a finite number")
        if kind is float and v != 0 and not FLOAT32_TINY <= abs(v) <= FLOAT32_MAX:
            raise ValueError(
                f"{name}={v!r} is outside the range of float32, the dtype the theory computes in: allowed 0 or "
                f"{FLOAT32_TINY:.4g} <= |{name}| <= {FLOAT32_MAX:.4g}"
            )


def coerce(field: str, value):
    """``value`` as ``field``'s type: a whole float (16.0) for an int field as that int, any real number
    for a float field as a float; refused (ValueError naming the field and the value) where ``check``
    would refuse its type, and a fractional number (16.7) for an int field."""
    hint = HINTS[field]
    if hint is int and _is(float, value) and math.isfinite(value) and float(value).is_integer():
        value = int(value)
    _check_value(field, value)
    return hint(value) if hint in (int, float, str, bool) else value


def cells(cfg: TheoryConfig) -> list[TheoryConfig]:
    """The product of the grid, in a fixed order (the last grid field varies fastest)."""
    names = [n for n, _ in cfg.grid]
    base = dataclasses.replace(cfg, grid=())
    return [
        dataclasses.replace(base, **dict(zip(names, combo))) for combo in itertools.product(*(v for _, v in cfg.grid))
    ]


def to_dict(cfg: TheoryConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["grid"] = {n: list(v) for n, v in cfg.grid}
    return d

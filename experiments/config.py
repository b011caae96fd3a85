"""Typed configuration of a theory sweep: one frozen dataclass covering every knob of ``theory/``.

A config holds scalar values; ``grid`` names the fields to sweep and their values, so any field can
be swept and any field can be overridden from the command line (``field=value``; tuples as ``a,b,c``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

METHODS = ("closed_form", "flow", "series")
FINETUNE_TASKS = ("reversed", "permuted", "same", "rotated", "correlated")
SPECTRA = ("power_law", "exponential", "explicit")
INITS = ("aligned", "gaussian")
LR_POLICIES = ("fixed", "shrinking")


@dataclasses.dataclass(frozen=True)
class TheoryConfig:
    """Every knob of a linear-network experiment. Times are flow times (GD: T = sum of lr over steps)."""

    # Pre-training task A = U diag(s) V^T.
    d_in: int = 32
    h: int = 32
    d_out: int = 32
    rank: int = 32
    spectrum: str = "power_law"
    s1: float = 1.0
    alpha: float = 1.0
    rate: float = 0.1
    spectrum_values: tuple[float, ...] = ()
    task_seed: int = 0
    # Fine-tuning task B.
    finetune_task: str = "reversed"
    theta: float = 0.0
    rho: float = 0.0
    # Network and initialisation.
    depth: int = 2
    init: str = "aligned"
    u0: float = 1e-6
    init_std: float = 0.01
    imbalance: float = 0.0
    # Pre-training: the closed form, matrix gradient flow, or an optax series of budgets.
    method: str = "closed_form"
    t_min: float = 0.1
    t_max: float = 1e4
    n_t: int = 61
    dt_max: float = 0.02
    optimizer: str = "sgd"
    pretrain_lr: float = 0.05
    schedule: str = "cosine"
    series_mode: str = "separate"
    budgets: tuple[int, ...] = (100, 200, 400, 800, 1600, 3200)
    batch_size: int = 32
    label_noise: float = 0.0
    # Gaussian perturbation: noise std gamma * sigma_k, sigma_k = init std ("init") or noise_sigma.
    gamma: float = 0.2
    noise_scale: str = "init"
    noise_sigma: float = 0.0
    n_draws: int = 256
    # Fine-tuning: tau = lr * steps, optional L2 pull ``reg`` toward W(T).
    lr: float = 0.02
    steps: int = 100
    reg: float = 0.0
    lr_policy: str = "fixed"
    shrink_power: float = 1.0
    shrink_t_ref: float = 10.0
    tuned_lr: bool = False
    seed: int = 0
    # Sweep: ((field, (v1, v2, ...)), ...); cells are the product.
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    chunk_size: int = 8

    def __post_init__(self):
        check(self)


CHOICES = {"method": METHODS, "finetune_task": FINETUNE_TASKS, "spectrum": SPECTRA, "init": INITS,
           "lr_policy": LR_POLICIES, "noise_scale": ("init", "absolute"), "series_mode": ("separate", "single"),
           "schedule": ("constant", "cosine", "wsd"), "optimizer": ("sgd", "momentum", "adam", "adamw")}
POSITIVE = ("d_in", "h", "d_out", "rank", "depth", "n_t", "steps", "n_draws", "batch_size", "chunk_size",
            "t_min", "t_max", "dt_max", "u0", "init_std", "pretrain_lr", "lr", "s1", "shrink_t_ref")
NON_NEGATIVE = ("gamma", "reg", "alpha", "rate", "label_noise", "noise_sigma", "shrink_power", "theta")


def check(cfg: TheoryConfig) -> None:
    """Raise ValueError naming the first bad field and what is allowed (grid values included)."""
    cells = [cfg] if not cfg.grid else []
    for name, values in cfg.grid:
        if name not in FIELDS or name == "grid":
            raise ValueError(f"grid field {name!r} is unknown; allowed: {', '.join(sorted(FIELDS))}")
        if not values:
            raise ValueError(f"grid field {name!r} has no values")
        for v in values:
            cells.append(dataclasses.replace(cfg, grid=(), **{name: v}))
    for c in cells:
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
        if c.t_min >= c.t_max:
            raise ValueError(f"t_min={c.t_min} must be < t_max={c.t_max}")
        if c.rank > min(c.d_in, c.d_out) or c.rank > c.h:
            raise ValueError(f"rank={c.rank} must be <= min(d_in, d_out, h)={min(c.d_in, c.d_out, c.h)}")
        if c.method == "closed_form" and c.finetune_task in ("rotated", "correlated"):
            raise ValueError(f"finetune_task={c.finetune_task!r} is not aligned with A; use method=flow or series")
        if c.n_t < 3:
            raise ValueError(f"n_t={c.n_t} must be >= 3 (an inflection needs three points)")


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TheoryConfig)}
_HINTS = typing.get_type_hints(TheoryConfig)


def parse_value(name: str, text: str):
    """Turn ``text`` into the type of field ``name`` (tuples from comma lists); ValueError names both."""
    if name not in FIELDS or name == "grid":
        raise ValueError(f"override key {name!r} is unknown; allowed: {', '.join(sorted(k for k in FIELDS if k != 'grid'))}")
    hint = _HINTS[name]
    try:
        if typing.get_origin(hint) is tuple:
            item = typing.get_args(hint)[0]
            return tuple(_scalar(item, t) for t in text.split(",") if t.strip())
        return _scalar(hint, text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a valid {getattr(hint, '__name__', hint)}") from None


def _scalar(kind, text: str):
    text = text.strip()
    if kind is bool:
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(text)
    if kind is int:
        value = float(text)
        if value != int(value):
            raise ValueError(text)
        return int(value)
    return kind(text)


def apply_overrides(cfg: TheoryConfig, overrides: dict[str, str]) -> TheoryConfig:
    """Override fields; a swept field given a comma list replaces the grid's values, a scalar pins it."""
    grid = dict(cfg.grid)
    fixed = {}
    for name, text in overrides.items():
        hint = _HINTS.get(name)
        if hint is not None and typing.get_origin(hint) is not tuple and "," in text:
            grid[name] = tuple(parse_value(name, t) for t in text.split(",") if t.strip())
            continue
        fixed[name] = parse_value(name, text)
        grid.pop(name, None)
    return dataclasses.replace(cfg, grid=tuple(grid.items()), **fixed)


def cells(cfg: TheoryConfig) -> list[TheoryConfig]:
    """The product of the grid, in a fixed order (the last grid field varies fastest)."""
    import itertools

    names = [n for n, _ in cfg.grid]
    base = dataclasses.replace(cfg, grid=())
    return [dataclasses.replace(base, **dict(zip(names, combo))) for combo in itertools.product(*(v for _, v in cfg.grid))]


def to_dict(cfg: TheoryConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["grid"] = {n: list(v) for n, v in cfg.grid}
    return d

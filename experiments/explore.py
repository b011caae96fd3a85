"""The explorer's numbers (``notebooks/explore.py``): one setup of the linear theory -> every curve, T*,
the analytic prediction and the (T, lr) and (T, gamma) landscapes, fast enough to follow a slider.

A ``Setup`` is the handful of knobs a theorist moves; ``Setup.config()`` is the same point as a
``TheoryConfig`` (so ``config.check`` names bad values, and the default setup *is* the presets' default,
``presets.BASE``). ``explore(setup)`` computes on the preset's time grid (81 log-spaced T in [0.1, 1e4]):

- aligned B (``reversed``, ``permuted``): ``protocol.closed_form_curves``, pre-training by the per-mode
  law (with weight decay: target s - weight_decay), fine-tuning for flow time tau = lr x steps toward
  (1 - replay) b + replay s (the logistic law; the per-mode ODE with an L2 pull lambda or at depth != 2),
  the exact Gaussian excess;
- misaligned B (``rotated`` by theta, ``correlated`` by rho): aligned balanced pre-training on A is
  still exact per mode (the flow never leaves the aligned manifold), so the network at T is the
  embedded closed form; fine-tuning is ``steps`` GD steps at ``lr`` on (1 - replay) L_B + replay L_A
  (``protocol.simulated_curves``), as ``method=flow`` runs do.

Speed: the spectrum is padded with zero modes (s_i = u0_i = 0: they stay 0 under every law, so they add
exactly nothing) to ``D`` modes, so rank, alpha, s1, u0, gamma, sigma, lr, steps (aligned), lambda,
theta, rho, weight_decay and replay are traced values of one compiled function per (path, depth, lambda
= 0 or not, steps and replay = 0 or not on the GD path); the landscapes are vmapped in the same call,
and the GD path builds its teacher inside it (``tasks.padded_task_pair``: a new rank compiles nothing).
T* is ``measure.inflection`` of the grid; for the closed form an interior minimum is refined on
``experiments.sweep.compute.REFINE_POINTS`` times inside its grid bracket, as ``ovt theory`` stores it,
so the explorer's T* of a preset's setup is the stored T*.

``experiments.overlay.store_overlay`` lays a result store over it.
"""

from __future__ import annotations

import dataclasses
import functools
import gc

import jax
import jax.numpy as jnp
import numpy as np

from analysis.inflection import vertex_minimum
from analysis.landscape import local_minima
from experiments.sweep import compute as theory_run
from experiments.sweep import presets
from experiments.sweep.config import TheoryConfig, coerce
from theory import measure, network, perturbation, prediction, protocol, tasks

BASE = presets.BASE
D = BASE.d_in  # d_in = h = d_out: the default setup's widths, and the most modes a setup has
TASKS = ("reversed", "permuted", "rotated", "correlated")
ALIGNED = ("reversed", "permuted")
# The landscapes of the presets ``landscape`` and ``landscape_gamma``: 64 log-spaced values each.
LANDSCAPE_LRS = np.array(dict(presets.PRESETS["landscape"].grid)["lr"])
LANDSCAPE_GAMMAS = np.array(dict(presets.PRESETS["landscape_gamma"].grid)["gamma"])
# The GD path (misaligned B) fine-tunes every (lr, T) by real GD steps: its (T, lr) landscape keeps
# every 8th lr on every other T (8 x 41) to stay within the re-render budget, and beyond BASE.steps a T
# grid coarser in proportion (8 x 21 at 200 steps, 8 x 11 at 400): a fixed number of GD steps.
GD_LR_STRIDE, GD_T_STRIDE = 8, 2
GAMMA_STOPS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8)  # the gamma slider's stops (0.2: the default)
CURVES = (
    "pretrain_loss",
    "perturbed_pretrain_loss",
    "finetuned_pretrain_loss",
    "finetune_loss",
    "perturbed_finetune_loss",
    "finetuned_finetune_loss",
)


@dataclasses.dataclass(frozen=True)
class Setup:
    """The explorer's knobs, each a ``TheoryConfig`` field of the same name: spectrum s_i = s1 i^-alpha
    (i <= rank), init strength u0, depth, noise gamma x init_std on every layer, fine-tuning lr x steps
    with an L2 pull reg, the task B (``finetune_task``), and the mitigations with a closed form: weight
    decay in pre-training and replay of A in fine-tuning."""

    alpha: float = BASE.alpha
    rank: int = BASE.rank
    s1: float = BASE.s1
    u0: float = BASE.u0
    depth: int = BASE.depth
    gamma: float = BASE.gamma
    init_std: float = BASE.init_std
    lr: float = BASE.lr
    steps: int = BASE.steps
    reg: float = BASE.reg
    finetune_task: str = BASE.finetune_task
    theta: float = BASE.theta
    rho: float = BASE.rho
    weight_decay: float = BASE.weight_decay
    replay: float = BASE.replay

    def __post_init__(self):
        """Refuses what ``config`` refuses, naming the knob: a value of another type (rank=16.7,
        gamma=None, a string), a non-finite one or one outside float32, a value out of its range, a
        task the explorer does not show. A whole float for rank, depth or steps becomes its int, any
        real number for the other numeric knobs a float."""
        if self.finetune_task not in TASKS:
            allowed = ", ".join(TASKS)
            raise ValueError(f"finetune_task={self.finetune_task!r} is not allowed; choose one of: {allowed}")
        for knob in KNOBS:
            object.__setattr__(self, knob, coerce(knob, getattr(self, knob)))
        self.config()

    def config(self) -> TheoryConfig:
        """The same point as a ``TheoryConfig`` (widths D, the presets' time grid); ValueError naming a
        bad knob (``config.check``)."""
        return dataclasses.replace(
            BASE,
            **{knob: getattr(self, knob) for knob in KNOBS},
            method="closed_form" if self.finetune_task in ALIGNED else "flow",
        )

    @classmethod
    def from_config(cls, cfg: TheoryConfig) -> Setup | None:
        """The setup of one cell of a stored theory run, or None when the explorer cannot show it
        (another method, init, spectrum family, width, time grid or lr policy)."""
        same = all(getattr(cfg, f) == getattr(BASE, f) for f in ("d_in", "h", "d_out", "t_min", "t_max", "n_t"))
        plain = cfg.init == "aligned" and cfg.spectrum == "power_law" and cfg.noise_scale == "init"
        aligned = cfg.method == "closed_form" and cfg.finetune_task in ALIGNED
        misaligned = cfg.method == "flow" and cfg.finetune_task in ("rotated", "correlated")
        if not (same and plain and (aligned or misaligned) and cfg.lr_policy == "fixed" and not cfg.tuned_lr):
            return None
        if cfg.imbalance or cfg.finetune_samples or cfg.task_seed != BASE.task_seed:
            return None
        return cls(**{knob: getattr(cfg, knob) for knob in KNOBS})


KNOBS = tuple(f.name for f in dataclasses.fields(Setup))


DEFAULT = Setup()


@dataclasses.dataclass(frozen=True)
class Landscape:
    """A loss over (swept value, T): ``loss[i]`` is the curve at ``values[i]``; ``t_star`` its global
    T* (NaN: none in range), ``minima`` every local minimum (value, T) (``analysis.landscape``)."""

    name: str
    values: np.ndarray
    T: np.ndarray
    loss: np.ndarray
    t_star: np.ndarray
    minima: list[tuple[float, float]]
    predicted: np.ndarray | None = None  # T*_pred per value (gamma landscape, depth 2)


@dataclasses.dataclass(frozen=True)
class Result:
    """Everything the explorer shows for one setup."""

    setup: Setup
    T: np.ndarray
    curves: dict[str, np.ndarray]  # the ``CURVES`` of ``protocol.Curves`` on T
    t_star: dict[str, float]  # {"gaussian": T* of the perturbed L_A, "finetune": of the fine-tuned L_A}
    kind: dict[str, str]  # their ``analysis.inflection`` kinds
    predicted: float  # theory.prediction.gaussian_t_star (NaN where it does not apply or no mode helps)
    landscapes: tuple[Landscape, Landscape]  # (T, lr) of the fine-tuned L_A, (T, gamma) of the perturbed L_A


# --------------------------------------------------------------------------------------- compute


def _modes(alpha, s1, rank, u0, perm):
    """(s, b, u0 per mode, s for the prediction) on D modes inside a trace: s_i = s1 i^-alpha
    (``tasks.power_law_spectrum``) for i <= rank and 0 beyond, b = s[perm], u0 on the real modes and 0
    beyond. The prediction's copy repeats mode 1 instead of zeros: a duplicate of a mode changes
    neither which modes help nor the slowest helpful one, so T*_pred is the rank-r model's exactly."""
    real = jnp.arange(D) < rank
    s = jnp.where(real, tasks.power_law_spectrum(D, s1, alpha), 0.0)
    return s, s[perm], jnp.where(real, u0, 0.0), jnp.where(real, s, s[0])


def _permutation(cfg: TheoryConfig) -> np.ndarray:
    """B's modes as an index into s on D modes (``compute.mode_permutation``; padded modes map to themselves)."""
    return np.concatenate([theory_run.mode_permutation(cfg), np.arange(cfg.rank, D)]).astype(np.int32)


def _aligned_curves(depth: int, reg, mitigations, s, b, u0, T, gamma, sigma, tau) -> protocol.Curves:
    weight_decay, replay = mitigations
    return protocol.closed_form_curves(
        s, b, u0, T, gamma=gamma, sigma1=sigma, sigma2=sigma, d_in=D, h=D, d_out=D, tau=tau, reg=reg, depth=depth,
        dt_max=BASE.dt_max, weight_decay=weight_decay, replay=replay,
    )  # fmt: skip


def _predicted(s_pred, u0, gammas, sigma):
    return prediction.gaussian_t_star(s_pred, u0, gammas, sigma, sigma, D, D)


@functools.cache
def _aligned(depth: int, pull: bool):
    """jit: (modes, T, gamma, sigma, tau, reg, mitigations, taus, gammas) -> (Curves, fine-tuned L_A over
    taus, perturbed L_A over gammas, T*_pred over [gamma, *gammas]); ``mitigations`` = (weight_decay,
    replay). ``pull`` False keeps reg a Python 0 (the logistic law at depth 2)."""

    def run(modes, T, gamma, sigma, tau, reg, mitigations, taus, gammas):
        s, b, u0, s_pred = _modes(*modes)
        reg = reg if pull else 0.0
        curves = _aligned_curves(depth, reg, mitigations, s, b, u0, T, gamma, sigma, tau)
        by_tau = jax.vmap(
            lambda t: _aligned_curves(depth, reg, mitigations, s, b, u0, T, gamma, sigma, t).finetuned_pretrain_loss
        )
        by_gamma = jax.vmap(
            lambda g: _aligned_curves(depth, reg, mitigations, s, b, u0, T, g, sigma, tau).perturbed_pretrain_loss
        )
        pred = _predicted(s_pred, modes[3], jnp.concatenate([gamma[None], gammas]), sigma)
        return curves, by_tau(taus), by_gamma(gammas), pred

    return jax.jit(run)


@functools.cache
def _aligned_local(depth: int, pull: bool):
    """jit: the two ``experiments.sweep.compute.INFLECTIONS`` curves on times of their own, (2, P) -> (2, P)."""

    def run(modes, local, gamma, sigma, tau, reg, mitigations):
        s, b, u0, _ = _modes(*modes)
        reg = reg if pull else 0.0
        return jnp.stack(
            [
                getattr(_aligned_curves(depth, reg, mitigations, s, b, u0, T, gamma, sigma, tau), name)
                for T, (_, name) in zip(local, theory_run.INFLECTIONS)
            ]
        )

    return jax.jit(run)


@functools.cache
def _gd(depth: int, steps: int, mixed: bool = False):
    """jit for misaligned B: (modes, key, task, T, gamma, sigma, lr, reg, mitigations, lrs, T_lrs, gammas)
    -> (Curves, fine-tuned L_A over (lrs, T_lrs), perturbed L_A over (gammas, T), T*_pred); ``task`` =
    (theta, rho, rotated?), ``mitigations`` = (weight_decay, replay). The teacher is built inside, so a
    new rank, theta or rho compiles nothing. ``mixed`` False keeps replay a Python 0: GD on L_B alone,
    without the L_A gradient that replay adds to every step."""
    sigmas = lambda sigma: (sigma,) * depth  # noqa: E731

    def run(modes, key, task, T, gamma, sigma, lr, reg, mitigations, lrs, T_lrs, gammas):
        s, b, u0, s_pred = _modes(*modes)
        weight_decay, replay = mitigations
        replay = replay if mixed else 0.0
        U, V, A, B = tasks.padded_task_pair(key, modes[2], s, b, *task)

        def nets(T):
            return jax.vmap(lambda u: network.init_aligned_balanced(U, V, u, D, depth))(
                protocol.pretrained_strengths(s, u0, T, depth, BASE.dt_max, weight_decay)
            )

        def finetuned(Ws, lr):
            return protocol.simulated_curves(
                Ws, A, B, gamma=gamma, sigmas=sigmas(sigma), lr=lr, steps=steps, reg=reg, replay=replay
            )

        Ws = nets(T)
        curves = finetuned(Ws, lr)
        Ws_lr = nets(T_lrs)
        by_lr = jax.vmap(lambda r: finetuned(Ws_lr, r).finetuned_pretrain_loss)(lrs)
        loss_A = jax.vmap(lambda W: network.task_loss(W, A))(Ws)
        by_gamma = jax.vmap(lambda g: loss_A + jax.vmap(lambda W: perturbation.excess(W, g, sigmas(sigma)))(Ws))(gammas)
        pred = _predicted(s_pred, modes[3], jnp.concatenate([gamma[None], gammas]), sigma)
        return curves, by_lr, by_gamma, pred

    return jax.jit(run)


@functools.cache
def _task_key(seed: int) -> jax.Array:
    return jax.random.PRNGKey(seed)


def _refined(T, y, t_star, kind, evaluate) -> np.ndarray:
    """Interior T* refined as ``experiments.sweep.compute.inflections`` refines them: the curve on
    ``REFINE_POINTS`` log-spaced times inside the grid bracket of its argmin, then a parabola."""
    if not (kind == "interior").any():
        return t_star
    i = np.argmin(np.where(np.isfinite(y), y, np.inf), axis=-1)
    j = np.clip(i, 1, len(T) - 2)
    dtype = np.float64 if jax.config.jax_enable_x64 else np.float32  # as the store judges T*
    local = np.exp(np.linspace(np.log(T[j - 1]), np.log(T[j + 1]), theory_run.REFINE_POINTS, axis=-1)).astype(dtype)
    y_local = np.asarray(evaluate(jnp.asarray(local)))
    t_star = t_star.copy()
    for k in np.nonzero(kind == "interior")[0]:
        refined = float(vertex_minimum(local[k], y_local[k], dtype=dtype))
        if np.isfinite(refined):
            t_star[k] = refined
    return t_star


def _landscape(name: str, values, T, loss, predicted=None) -> Landscape:
    loss = np.asarray(loss, float)
    t_star = np.asarray(measure.inflection(T, loss), float)
    minima = [(float(v), t) for v, row in zip(values, loss) for t, _ in local_minima(T, row)]
    return Landscape(name, np.asarray(values, float), np.asarray(T, float), loss, t_star, minima, predicted)


def explore(setup: Setup = DEFAULT) -> Result:
    """Every number the explorer shows for ``setup`` (module docstring); ValueError naming a bad knob,
    or ``setup`` when it is not a ``Setup``."""
    if not isinstance(setup, Setup):
        raise ValueError(f"setup={setup!r} must be an explore.Setup")
    cfg = setup.config()
    T = theory_run.t_grid(cfg)
    dtype = jnp.result_type(float)
    f = functools.partial(jnp.asarray, dtype=dtype)
    modes = (f(cfg.alpha), f(cfg.s1), jnp.int32(cfg.rank), f(cfg.u0), jnp.asarray(_permutation(cfg)))
    gammas = f(LANDSCAPE_GAMMAS)
    args = (f(cfg.gamma), f(cfg.init_std))
    pull, reg = cfg.reg != 0, f(cfg.reg)
    mitigations = (f(cfg.weight_decay), f(cfg.replay))
    if cfg.finetune_task in ALIGNED:
        tau, taus = f(cfg.lr * cfg.steps), f(LANDSCAPE_LRS * cfg.steps)
        c, by_lr, by_gamma, pred = _aligned(cfg.depth, pull)(modes, f(T), *args, tau, reg, mitigations, taus, gammas)
        lr_values, T_lr = LANDSCAPE_LRS, T
    else:
        rotated = cfg.finetune_task == "rotated"
        if rotated and 2 * cfg.rank > D:  # tasks.rotated's condition, checked before the trace
            raise ValueError(f"rotating a rank-{cfg.rank} subspace needs dimension >= {2 * cfg.rank}, got {D}")
        task = (f(cfg.theta), f(cfg.rho), jnp.bool_(rotated))
        t_stride = GD_T_STRIDE * max(1, cfg.steps // BASE.steps)
        lr_values, T_lr = LANDSCAPE_LRS[GD_LR_STRIDE // 2 :: GD_LR_STRIDE], T[::t_stride]
        c, by_lr, by_gamma, pred = _gd(cfg.depth, cfg.steps, cfg.replay != 0)(
            modes,
            _task_key(cfg.task_seed),
            task,
            f(T),
            *args,
            f(cfg.lr),
            reg,
            mitigations,
            f(lr_values),
            f(T_lr),
            gammas,
        )
    curves = {name: np.asarray(getattr(c, name), float) for name in CURVES}
    y = np.stack([np.asarray(getattr(c, name)) for _, name in theory_run.INFLECTIONS])
    t_star = np.array(measure.inflection(T, y), float)
    kind = measure.inflection_kind(T, y)
    if cfg.finetune_task in ALIGNED:  # the closed form is refined; GD runs keep the grid estimate (as stored)
        local = _aligned_local(cfg.depth, pull)
        t_star = _refined(T, y, t_star, kind, lambda t: local(modes, t, *args, tau, reg, mitigations))
    names = [m for m, _ in theory_run.INFLECTIONS]
    # The prediction is the aligned depth-2 model's without weight decay (``theory.prediction``, as
    # ``experiments.sweep.rows.gaussian_prediction``); noise does not see B.
    plain = cfg.depth == 2 and cfg.weight_decay == 0
    pred = np.asarray(pred, float) if plain else np.full(1 + LANDSCAPE_GAMMAS.size, np.nan)
    return Result(
        setup,
        np.asarray(T, float),
        curves,
        dict(zip(names, map(float, t_star))),
        dict(zip(names, map(str, kind))),
        float(pred[0]),
        (
            _landscape("lr", lr_values, T_lr, by_lr),
            _landscape("gamma", LANDSCAPE_GAMMAS, T, by_gamma, pred[1:]),
        ),
    )


def warm(depths=(1, 2, 3, 4)) -> None:
    """Compile what a control can reach beyond the default: every depth with and without the L2 pull, and
    the GD path (misaligned B, every rank, theta and rho; with and without replay) at the default
    depth and steps (the notebook runs it in a thread). Then freeze what exists into the collector's
    permanent generation: JAX's compiled functions and caches are ~270k long-lived objects that
    every full collection walks again (0.16-0.18 s measured), a pause that otherwise lands on a
    re-render now and then."""
    for depth in depths:
        for reg in (0.0, 0.1):
            explore(Setup(depth=depth, reg=reg))
    explore(Setup(rank=D // 2, finetune_task="rotated"))
    explore(Setup(rank=D // 2, finetune_task="rotated", replay=0.5))
    gc.collect()
    gc.freeze()

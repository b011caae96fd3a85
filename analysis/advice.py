"""Which checkpoint to fine-tune: each checkpoint's loss after a planned fine-tuning, predicted from
cheap probes (``ovt advise``), and the leave-one-series-out check of that advice on a study.

The decomposition (``analysis.phenomenology``) writes the pre-training loss after a modification of
size m (lr x steps for fine-tuning) as the base loss plus an excess, L(T, m) = L_base(T) + S(T, m),
S = C m^p T^beta. The advice measures L_base at every checkpoint (its perplexity) and lets the
measured Gaussian excess g(T) (a few paired draws at one or two gammas, log perplexity over the
clean one) stand for the excess's growth with T, which the theory traces to the same learned modes:

    log S(T, m) = a + p log m + rho log g(T).                                             (1)

Its coefficients are fitted by ordinary least squares on points where S was measured: other series
fine-tuned at the planned lr and steps (*transfer*; p is not needed at one m), or this series
fine-tuned briefly at two lrs on a few checkpoints (*probe*: p carries the probe's lr x steps to the
planned one). A Gaussian excess at or below ``FLOOR`` counts as no measurable sensitivity. Where
fewer calibration points have S > 0 than (1) has coefficients plus one, the excess is taken as a
constant (their mean), and the advice says so. The in-task loss after fine-tuning is the linear
model ell = c0 + c1 L_base (+ c2 log m on probe points).

Intervals (95%): replicates draw the coefficients from their multivariate t (OLS covariance, the
fit's residual dof), a fresh run's residual per checkpoint (t, scaled by the residual s.d.), and
log g from its s.e. over the probe's draws (the relative variance over draws, pooled as a median
over checkpoints; none with one draw). A checkpoint's predicted loss is the fit's own value (the
median of its replicates where the excess is log-normal; no Monte-Carlo noise enters the choice), its
interval the replicates' 2.5-97.5 percentiles. The advice is the checkpoint of lowest predicted loss; its
short list adds every checkpoint whose paired difference from it has a 95% interval reaching 0.
Where the checkpoints span three or more token counts the decomposition itself is fitted: E + A
T^-alpha to the base loss, C T^beta to each replicate's predicted excess, and T* = (alpha A / (beta
C))^(1/(alpha + beta)) with the replicates' interval.

Pure functions of arrays: no file or terminal I/O (``experiments.advise`` reads the stores).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from analysis import phenomenology as ph

FLOOR = 1e-6  # nats: a Gaussian excess at or below it is no measurable sensitivity
LEVEL = 0.95
REPLICATES = 4000
GRID = 60  # points of the decomposition's curve


@dataclasses.dataclass(frozen=True)
class Probes:
    """What the probes measured on every checkpoint of one series (ascending tokens)."""

    names: tuple[str, ...]
    T: np.ndarray  # (n,) pre-training tokens
    base: np.ndarray  # (n,) log perplexity, nats
    excess: np.ndarray  # (n, gammas, draws) log perplexity under noise minus ``base``, nats


def sensitivity(excess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log g, its s.e.) per checkpoint: g the mean excess over draws (floored at ``FLOOR``), log g
    averaged over gammas; the s.e. from the draws' relative variance (module docstring), 0 with one draw.

    Parameters
    ----------
    excess : array, shape (n, gammas, draws)
        Gaussian excess in nats.

    Returns
    -------
    (array (n,), array (n,))

    Examples
    --------
    >>> log_g, se = sensitivity(np.array([[[0.1, 0.1]], [[0.2, 0.2]]]))
    >>> np.round(np.exp(log_g), 3).tolist(), se.tolist()
    ([0.1, 0.2], [0.0, 0.0])
    """
    excess = np.asarray(excess, float)
    g = excess.mean(axis=2)
    log_g = np.log(np.maximum(g, FLOOR)).mean(axis=1)
    draws = excess.shape[2]
    if draws < 2 or not (g > FLOOR).any():
        return log_g, np.zeros_like(log_g)
    relative = excess.var(axis=2, ddof=1)[g > FLOOR] / g[g > FLOOR] ** 2
    return log_g, np.full_like(log_g, math.sqrt(float(np.median(relative)) / draws))


@dataclasses.dataclass(frozen=True)
class Fit:
    """y = X coef + e by ordinary least squares; ``log``: y is log S (eq. 1), else the value itself."""

    names: tuple[str, ...]  # the columns: "1", "log g", "log m", "base"
    coef: np.ndarray
    cov: np.ndarray
    sd: float  # residual s.d., the scatter of a fresh run around the fit
    dof: int
    n: int
    log: bool

    def describe(self) -> dict:
        terms = " + ".join(f"{c:.4g}" + ("" if name == "1" else f" {name}") for name, c in zip(self.names, self.coef))
        return {
            "model": ("log S = " if self.log else "") + terms,
            "coefficients": dict(zip(self.names, map(float, self.coef))),
            "se": dict(zip(self.names, map(float, np.sqrt(np.diag(self.cov))))),
            "residual_sd": self.sd,
            "dof": self.dof,
            "points": self.n,
        }


def fit_ols(X: np.ndarray, y: np.ndarray, names: tuple[str, ...], log: bool) -> Fit:
    """OLS of ``y`` on the columns of ``X``; ValueError unless there is at least one residual dof."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    n, q = X.shape
    if n <= q or np.linalg.matrix_rank(X) < q:
        raise ValueError(
            f"{n} calibration points do not determine {q} coefficients ({', '.join(names)}) with a residual"
        )
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    s2 = float(resid @ resid) / (n - q)
    return Fit(tuple(names), coef, s2 * np.linalg.inv(X.T @ X), math.sqrt(s2), n - q, n, log)


def _design(names, columns: dict) -> np.ndarray:
    n = max(np.size(v) for v in columns.values())
    return np.stack([np.ones(n) if name == "1" else np.broadcast_to(columns[name], n) for name in names], axis=-1)


def forgetting_fit(log_g, log_m, S) -> Fit:
    """Eq. (1) on calibration points (log g, log m, measured excess S); log m is a column only where
    it varies. The constant model (S = its mean) where too few points have S > 0."""
    log_g, log_m, S = (np.asarray(v, float).ravel() for v in np.broadcast_arrays(log_g, log_m, S))
    ok = np.isfinite(S) & np.isfinite(log_g)
    keep = ok & (S > 0)
    names = ("1", "log g") + (("log m",) if np.unique(log_m[keep]).size > 1 else ())
    if keep.sum() > len(names) and np.unique(log_g[keep]).size > 1:
        X = _design(names, {"log g": log_g[keep], "log m": log_m[keep]})
        try:
            return fit_ols(X, np.log(S[keep]), names, log=True)
        except ValueError:
            pass
    return fit_ols(np.ones((int(ok.sum()), 1)), S[ok], ("1",), log=False)


def task_fit(base, log_m, ell) -> Fit:
    """ell = c0 + c1 base (+ c2 log m where it varies): the in-task loss after fine-tuning."""
    base, log_m, ell = (np.asarray(v, float).ravel() for v in np.broadcast_arrays(base, log_m, ell))
    ok = np.isfinite(ell)
    names = ("1", "base") + (("log m",) if np.unique(log_m[ok]).size > 1 else ())
    while True:
        try:
            return fit_ols(_design(names, {"base": base[ok], "log m": log_m[ok]}), ell[ok], names, log=False)
        except ValueError:
            if len(names) == 1:
                raise
            names = names[:-1]


def _replicates(fit: Fit, columns: dict, se: dict, n_rep: int, rng) -> np.ndarray:
    """(n_rep, n) predicted y: multivariate-t coefficients, a t residual per point, and each column
    of ``se`` drawn around its value."""
    n = max(np.size(v) for v in columns.values())
    X = np.broadcast_to(_design(fit.names, columns), (n_rep, n, len(fit.names))).copy()
    for name, s in se.items():
        if name in fit.names and np.any(s > 0):
            X[:, :, fit.names.index(name)] += rng.standard_normal((n_rep, n)) * s
    scale = np.sqrt(fit.dof / rng.chisquare(fit.dof, (n_rep, 1)))
    coef = fit.coef + scale * rng.multivariate_normal(np.zeros(len(fit.names)), fit.cov, n_rep, method="eigh")
    y = np.einsum("bnq,bq->bn", X, coef) + fit.sd * rng.standard_t(fit.dof, (n_rep, n))
    return np.exp(y) if fit.log else y


def _interval(values: np.ndarray, level: float = LEVEL) -> np.ndarray:
    tail = (1 - level) / 2
    return np.quantile(values, [tail, 1 - tail], axis=0, method="inverted_cdf").T


@dataclasses.dataclass(frozen=True)
class Advice:
    """The predictions per checkpoint and the choice (indices into ``probes``)."""

    probes: Probes
    log_g: np.ndarray
    loss: np.ndarray  # (n,) predicted pre-training loss after fine-tuning (log perplexity)
    loss_interval: np.ndarray  # (n, 2)
    excess: np.ndarray  # (n,) its predicted excess over the base loss
    task: np.ndarray | None  # (n,) predicted in-task loss
    task_interval: np.ndarray | None
    p_best: np.ndarray  # (n,) share of replicates in which the checkpoint is lowest
    choice: int
    short_list: tuple[int, ...]
    decomposition: dict | None
    forgetting: Fit
    caveats: tuple[str, ...]

    def rows(self) -> list[dict]:
        """One JSON-able record per checkpoint."""
        out = []
        for i, name in enumerate(self.probes.names):
            row = {
                "checkpoint": name,
                "tokens": float(self.probes.T[i]),
                "base_loss": float(self.probes.base[i]),
                "gaussian_excess": float(np.exp(self.log_g[i])),
                "predicted_loss": float(self.loss[i]),
                "interval": self.loss_interval[i].tolist(),
                "p_best": float(self.p_best[i]),
                "advised": i == self.choice,
                "short_list": i in self.short_list,
            }
            if self.task is not None:
                row |= {"predicted_task_loss": float(self.task[i]), "task_interval": self.task_interval[i].tolist()}
            out.append(row)
        return out


def advise(
    probes: Probes,
    forgetting: Fit,
    log_m: float,
    task: Fit | None = None,
    replicates: int = REPLICATES,
    seed: int = 0,
) -> Advice:
    """Predict every checkpoint's loss after fine-tuning of size exp(``log_m``) (module docstring) and
    choose.

    Parameters
    ----------
    probes : Probes
        The series' base loss and Gaussian excess at every checkpoint.
    forgetting : Fit
        Eq. (1) (``forgetting_fit``), calibrated elsewhere.
    log_m : float
        log(lr x steps) of the planned fine-tuning.
    task : Fit or None
        ``task_fit``, for the in-task loss.
    replicates : int
        Replicates behind the intervals, P(best) and the short list.
    seed : int
        Seeds the replicates.

    Returns
    -------
    Advice
    """
    rng = np.random.default_rng(seed)
    log_g, se = sensitivity(probes.excess)
    S = _replicates(forgetting, {"log g": log_g, "log m": log_m}, {"log g": se}, replicates, rng)
    L = probes.base + S
    fitted = _design(forgetting.names, {"log g": log_g, "log m": log_m}) @ forgetting.coef
    excess = np.exp(fitted) if forgetting.log else fitted
    loss = probes.base + excess
    choice = int(np.argmin(loss))
    low = _interval(L - L[:, [choice]])[:, 0]
    short = tuple(int(i) for i in np.flatnonzero(low <= 0))
    p_best = np.bincount(np.argmin(L, axis=1), minlength=L.shape[1]) / replicates
    task_pred = task_interval = None
    if task is not None:
        ell = _replicates(task, {"base": probes.base, "log m": log_m}, {}, replicates, rng)
        task_pred = _design(task.names, {"base": probes.base, "log m": log_m}) @ task.coef
        task_interval = _interval(ell)
    return Advice(
        probes,
        log_g,
        loss,
        _interval(L),
        excess,
        task_pred,
        task_interval,
        p_best,
        choice,
        short,
        decomposition(probes.T, probes.base, S, excess),
        forgetting,
        caveats(probes, forgetting, choice, short),
    )


def caveats(probes: Probes, forgetting: Fit, choice: int, short: tuple[int, ...]) -> tuple[str, ...]:
    """What limits this advice, in words (the how-to's "when not to trust it")."""
    found = []
    if probes.excess.shape[2] < 2:
        found.append("one draw per gamma: the probe's own noise is not in the intervals")
    if not forgetting.log:
        found.append("too few calibration points with a positive fine-tuning excess: the excess is taken as constant")
    if forgetting.dof < 3:
        found.append(
            f"the calibration has {forgetting.dof} residual dof: its intervals are wide and rest on few points"
        )
    if choice == probes.T.size - 1:
        found.append("the advised checkpoint is the last one: a later checkpoint might be better still")
    elif choice == 0:
        found.append("the advised checkpoint is the first one: an earlier checkpoint might be better still")
    if len(short) > 1:
        found.append(f"{len(short)} checkpoints are not separated from the advised one at 95%: any of them may be best")
    return tuple(found)


def decomposition(T: np.ndarray, base: np.ndarray, S: np.ndarray, excess: np.ndarray) -> dict | None:
    """E + A T^-alpha fitted to the base loss, C T^beta to the predicted ``excess`` (n,) and to each
    replicate's S (replicates, n), and T* with its interval; None with fewer than three token counts
    > 0 or a non-positive excess."""
    keep = np.asarray(T, float) > 0
    if np.unique(T[keep]).size < 3 or not (np.all(S[:, keep] > 0) and np.all(excess[keep] > 0)):
        return None
    try:
        (E, A, alpha), good = ph.fit_base(T[keep], base[keep])
    except ValueError:
        return None
    X = np.stack([np.ones(int(keep.sum())), np.log(T[keep])], axis=1)
    coef, *_ = np.linalg.lstsq(X, np.log(S[:, keep]).T, rcond=None)
    C, beta = np.exp(coef[0]), coef[1]
    mean_coef, *_ = np.linalg.lstsq(X, np.log(excess[keep]), rcond=None)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        t_star = np.where(beta > 0, (alpha * A / (beta * C)) ** (1.0 / (alpha + beta)), np.inf)
    point = float(ph.inflection_time(1.0, A, alpha, math.exp(mean_coef[0]), 0.0, mean_coef[1]))
    grid = np.geomspace(T[keep].min(), T[keep].max(), GRID)
    curve = ph.Decomposition(E, A, alpha, math.exp(mean_coef[0]), 0.0, mean_coef[1])
    inside = (t_star >= T[keep].min()) & (t_star <= T[keep].max())
    return {
        "E": E,
        "A": A,
        "alpha": alpha,
        "C": math.exp(mean_coef[0]),
        "beta": float(mean_coef[1]),
        "base_rmse_log": good.rmse_log,
        "t_star": point,
        "t_star_interval": _interval(t_star[:, None])[0].tolist(),
        "t_star_in_range": float(inside.mean()),
        "curve": {"T": grid.tolist(), "loss": curve.modified(grid, 1.0).tolist()},
    }


# ------------------------------------------------------------------------------ from result rows


def log_perplexity(values) -> np.ndarray:
    """log of perplexities; a diverged evaluation (inf) at the largest finite loss."""
    with np.errstate(divide="ignore"):
        logged = np.log(np.asarray(values, float))
    return np.where(np.isposinf(logged), math.log(np.finfo(float).max), logged)


def probes_of(frame, gammas, draws: int) -> Probes:
    """The probes in a perturb table (``ovt llm perturb``'s rows): its base perplexity and the first
    ``draws`` draws at each of ``gammas``; ValueError naming what is missing."""
    rows = frame[(frame.metric == "perplexity") & (frame.checkpoint != "inflection")]
    base = rows[rows.modification == "none"].groupby("checkpoint")[["pretrain_time", "value"]].first()
    base = base.sort_values("pretrain_time")
    noisy = rows[(rows.modification == "gaussian") & rows.gamma.isin(gammas) & (rows.seed < draws)]
    cube = noisy.pivot_table(index="checkpoint", columns=["gamma", "seed"], values="value", aggfunc="first")
    wanted = [(g, k) for g in gammas for k in range(draws)]
    cube = cube.reindex(index=base.index, columns=wanted).to_numpy(float)
    if base.empty or np.isnan(cube).any():
        where = frame.setup.iloc[0] if len(frame) else "a store"
        raise ValueError(f"{where}: no {draws} draw(s) at gamma {list(gammas)} on every checkpoint")
    log_base = log_perplexity(base.value)
    excess = log_perplexity(cube).reshape(len(base), len(gammas), draws) - log_base[:, None, None]
    return Probes(tuple(base.index), base.pretrain_time.to_numpy(float), log_base, excess)


def finetuned(frame, names: tuple[str, ...], metric: str) -> dict:
    """(lr, steps) -> (checkpoints ``names``, batch orders) of ``metric`` after fine-tuning at a fixed lr
    without a pull (``ovt llm finetune``'s rows; log for perplexity); ValueError where two runs overlap."""
    rows = frame[(frame.modification == "finetune") & (frame.lr_policy == "fixed") & (frame.metric == metric)]
    rows = rows[rows.reg.fillna(0.0) == 0.0]
    if rows.duplicated(["checkpoint", "lr", "steps", "seed"]).any():
        raise ValueError(f"{rows.setup.iloc[0]} has two fine-tuning runs at one lr and steps: give one dataset's")
    out = {}
    for (lr, steps), part in rows.groupby(["lr", "steps"]):
        values = part.pivot_table(index="checkpoint", columns="seed", values="value", aggfunc="first")
        values = values.reindex(index=list(names)).to_numpy(float)
        out[(float(lr), float(steps))] = log_perplexity(values) if metric == "perplexity" else values
    return out


def probe_fits(probes: Probes, tuned) -> tuple[Fit, Fit, list[dict]]:
    """Eq. (1) and the in-task model fitted on a fine-tuning probe's table (each probed checkpoint at
    each of its lrs), and the calibration points."""
    rows = tuned[tuned.checkpoint != "inflection"]
    base = rows[(rows.modification == "none") & (rows.metric == "perplexity")].groupby("checkpoint").value.first()
    names, log_base = tuple(base.index), log_perplexity(base)
    post, task = (finetuned(rows, names, metric) for metric in ("perplexity", "finetune_loss"))
    log_g = dict(zip(probes.names, sensitivity(probes.excess)[0]))
    points = [
        {"checkpoint": name, "lr": lr, "steps": steps, "log_g": float(log_g[name]), "base": float(log_base[j]),
         "excess": float(np.nanmean(post[(lr, steps)][j]) - log_base[j]),
         "task_loss": float(np.nanmean(task[(lr, steps)][j]))}
        for (lr, steps) in post for j, name in enumerate(names)
    ]  # fmt: skip
    column = {k: np.array([p[k] for p in points]) for k in ("log_g", "base", "excess", "task_loss", "lr", "steps")}
    log_m = np.log(column["lr"] * column["steps"])
    forgetting = forgetting_fit(column["log_g"], log_m, column["excess"])
    return forgetting, task_fit(column["base"], log_m, column["task_loss"]), points

"""The Hessian bridge: the growth of the measured sigma-weighted Hessian trace W(T) of each pre-training
series against the growth the linear theory predicts, and a second fit of the theory's time map kappa.
NumPy/SciPy, no JAX, no I/O.

The theory is the aligned balanced depth-2 linear network of ``rank`` modes with spectrum
s_i = s1 i^(-alpha_s), every mode starting at strength u0 and learned by the logistic law

    u_i(t) = s_i / (1 + (s_i/u0 - 1) exp(-2 s_i t)),        t = kappa T    (flow time from tokens).

With per-entry noise std 1/sqrt(rank) on both layers and widths rank, the gamma^2 part of the expected
loss excess under Gaussian weight noise is gamma^2 sum_i u_i, and the small-noise identity
excess = gamma^2/2 W makes the theory's trace

    W_theory(T) = 2 sum_i u_i(kappa T).

Both sides are compared through the growth exponent omega of W ~ T^omega (the least-squares slope of
log W on log T over a series' checkpoints), and kappa_H is the kappa that makes c W_theory(T; kappa)
fit the measured W(T) in log space, to be set beside the kappa fitted to the loss curve.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize, stats

from analysis.intervals import LEVEL, json_number

# The fit's bounds: the useful kappa range widened this much each way. Further out W_theory is flat across
# the T's to within the optimiser's tolerance, so the fit would stop short of a bound it cannot tell apart.
KAPPA_MARGIN = 3.0


def _spectrum(alpha_s: float, s1: float, u0: float, rank: int) -> np.ndarray:
    if not (alpha_s >= 0 and s1 > 0 and u0 > 0 and int(rank) == rank and rank >= 1):
        raise ValueError(f"needs alpha_s >= 0, s1, u0 > 0, integer rank >= 1; got {alpha_s=}, {s1=}, {u0=}, {rank=}")
    return s1 * np.arange(1, int(rank) + 1, dtype=float) ** (-alpha_s)


def _strengths(t, s, u0):
    """u_i(t) on a trailing mode axis; exp(-2 s t) <= 1 never overflows, and its underflow to 0 is exact."""
    with np.errstate(under="ignore"):
        return s / (1.0 + (s / u0 - 1.0) * np.exp(-2.0 * s * t[..., None]))


def theory_trace(T, kappa: float, alpha_s: float, s1: float, u0: float, rank: int) -> np.ndarray:
    """W_theory(T) = 2 sum_i u_i(kappa T), the linear model's sigma-weighted Hessian trace.

    Parameters
    ----------
    T : float or array
        Pre-training amounts (>= 0), in the units kappa maps to flow time (tokens for an LLM).
    kappa : float
        The time map: flow time t = kappa T (> 0).
    alpha_s, s1 : float
        The spectrum s_i = s1 i^(-alpha_s): decay exponent (>= 0) and largest singular value (> 0).
    u0 : float
        Every mode's initial strength (> 0).
    rank : int
        Number of modes (>= 1).

    Returns
    -------
    array, shape of T
    """
    T = np.asarray(T, float)
    if not (kappa > 0) or np.any(~(T >= 0)):
        raise ValueError(f"theory_trace needs kappa > 0 and T >= 0; got kappa={kappa}, min T={np.min(T, initial=0.0)}")
    return 2.0 * _strengths(kappa * T, _spectrum(alpha_s, s1, u0, rank), u0).sum(axis=-1)


def _series(T, W) -> tuple[np.ndarray, np.ndarray]:
    T, W = np.asarray(T, float), np.asarray(W, float)
    if T.ndim != 1 or T.shape != W.shape:
        raise ValueError(f"T and W must be 1-d arrays of one length; got T shape {T.shape}, W shape {W.shape}")
    if not np.all((T > 0) & np.isfinite(T)) or np.unique(T).size < 3:
        raise ValueError(f"T needs >= 3 distinct finite values > 0; got T={T.tolist()}")
    if not np.all((W > 0) & np.isfinite(W)):
        raise ValueError(f"W needs finite values > 0; got W={W.tolist()}")
    return T, W


@dataclasses.dataclass(frozen=True)
class Growth:
    """W ~ T^omega: the slope, its regression standard error, and the residual degrees of freedom."""

    omega: float
    se: float
    dof: int

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        half = float(stats.t.ppf(0.5 + level / 2, self.dof)) * self.se
        return self.omega - half, self.omega + half


def _slope(x, y) -> tuple[float, np.ndarray]:
    X = np.stack([np.ones_like(x), x], axis=1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return float(coef[1]), y - X @ coef


def growth_exponent(T, W) -> Growth:
    """omega of W ~ T^omega: the least-squares slope of log W on log T, with s.e. and dof = n - 2.

    se^2 = (sum r_j^2 / (n - 2)) / sum (log T_j - mean log T)^2, with r the log residuals.

    Parameters
    ----------
    T : array, shape (n,)
        Pre-training amounts (> 0, >= 3 distinct).
    W : array, shape (n,)
        The trace at each T (> 0).

    Returns
    -------
    Growth
    """
    T, W = _series(T, W)
    x = np.log(T)
    omega, residual = _slope(x, np.log(W))
    dof = T.size - 2
    se = math.sqrt(float(residual @ residual) / dof / float(np.sum((x - x.mean()) ** 2)))
    return Growth(omega, se, dof)


@dataclasses.dataclass(frozen=True)
class KappaFit:
    """log W = log c + log W_theory(T; kappa); ``at_bound`` is "lower", "upper" or None."""

    kappa: float
    c: float
    rmse_log: float
    at_bound: str | None


def kappa_range(T, alpha_s: float, s1: float, u0: float, rank: int) -> tuple[float, float]:
    """[t_1 / max T, t_rank / min T]: the kappas over which the theory's modes are learned across T.

    Mode i is learned near t_i = ln(s_i/u0) / (2 s_i); a mode that starts near or above its target
    still moves on its own time scale 1/(2 s_i), hence ln(...) is floored at 1.
    """
    s = _spectrum(alpha_s, s1, u0, rank)
    t_learn = np.maximum(np.log(s / u0), 1.0) / (2.0 * s)
    return float(t_learn.min() / np.max(T)), float(t_learn.max() / np.min(T))


def kappa_from_trace(T, W, alpha_s: float, s1: float, u0: float, rank: int, kappa0: float | None = None) -> KappaFit:
    """kappa_H and c of log W(T) = log c + log W_theory(T; kappa), the spectrum held fixed.

    Least squares over (log c, log kappa), log kappa bounded to ``kappa_range`` widened by KAPPA_MARGIN
    each way (outside it W_theory is flat in T and kappa is not identified), from ``kappa0`` alone or
    from a log grid over ``kappa_range``, keeping the lowest cost.

    Parameters
    ----------
    T : array, shape (n,)
        Pre-training amounts (> 0, >= 3 distinct), in tokens for an LLM.
    W : array, shape (n,)
        The measured trace at each T (> 0).
    alpha_s, s1, u0, rank : float, float, float, int
        The linear model's spectrum s_i = s1 i^(-alpha_s), initial strength and number of modes.
    kappa0 : float or None
        A starting kappa (> 0).

    Returns
    -------
    KappaFit
        ``kappa``, ``c``, ``rmse_log`` (root mean square of the log residuals) and ``at_bound``.
    """
    T, W = _series(T, W)
    if kappa0 is not None and not kappa0 > 0:
        raise ValueError(f"kappa0 must be > 0 or None; got {kappa0}")
    s = _spectrum(alpha_s, s1, u0, rank)
    y = np.log(W)
    lo, hi = kappa_range(T, alpha_s, s1, u0, rank)
    bounds = np.log([lo / KAPPA_MARGIN, hi * KAPPA_MARGIN])

    def residual(q):
        return q[0] + np.log(2.0 * _strengths(np.exp(q[1]) * T, s, u0).sum(axis=-1)) - y

    def jacobian(q):
        # d u/dt = 2 u (s - u) for the logistic law, and d log W_theory / d log kappa = t W'(t) / W.
        t = np.exp(q[1]) * T
        u = _strengths(t, s, u0)
        return np.stack([np.ones_like(T), t * (2.0 * u * (s - u)).sum(axis=-1) / u.sum(axis=-1)], axis=1)

    log_kappas = [math.log(kappa0)] if kappa0 is not None else np.linspace(math.log(lo), math.log(hi), 7)
    best = None
    for log_kappa in np.clip(log_kappas, *bounds):
        log_c = float(np.mean(-residual([0.0, log_kappa])))  # the best c for this kappa
        fit = optimize.least_squares(
            residual, [log_c, log_kappa], jac=jacobian, bounds=([-np.inf, bounds[0]], [np.inf, bounds[1]])
        )
        if best is None or fit.cost < best.cost:
            best = fit
    log_c, log_kappa = best.x
    at_bound = next((side for side, b in zip(("lower", "upper"), bounds) if abs(log_kappa - b) < 1e-3), None)
    return KappaFit(math.exp(log_kappa), math.exp(log_c), math.sqrt(float(np.mean(best.fun**2))), at_bound)


def _per_series(name: str, T, W, spec: dict, kappa_loss: float) -> dict:
    T, W = _series(T, W)
    theory = (spec["alpha_s"], spec["s1"], spec["u0"], spec["rank"])
    measured = growth_exponent(T, W)
    omega_theory, _ = _slope(np.log(T), np.log(theory_trace(T, kappa_loss, *theory)))
    fit = kappa_from_trace(T, W, *theory)
    return {
        "series": name,
        "n": int(T.size),
        "omega_measured": measured.omega,
        "omega_measured_se": measured.se,
        "omega_measured_dof": measured.dof,
        "omega_theory": omega_theory,
        "omega_difference": measured.omega - omega_theory,
        "kappa_hessian": fit.kappa,
        "kappa_hessian_at_bound": fit.at_bound,
        "c": fit.c,
        "rmse_log": fit.rmse_log,
        "kappa_loss": kappa_loss,
        "log_kappa_ratio": math.log(fit.kappa / kappa_loss),
    }


def _pooled(values, log: bool = False) -> dict:
    """Mean over k series with mean +- t(k-1, 0.975) sd/sqrt(k) (geometric mean and log space if ``log``)."""
    x = np.log(values) if log else np.asarray(values, float)
    k, mean = x.size, float(np.mean(x))
    back = math.exp if log else float
    if k < 2:
        return {"value": json_number(back(mean)), "interval": None, "method": "none (one series)", "n": k}
    half = float(stats.t.ppf(0.5 + LEVEL / 2, k - 1)) * float(np.std(x, ddof=1)) / math.sqrt(k)
    space = "geometric mean, interval in log space" if log else "mean"
    return {
        "value": json_number(back(mean)),
        "interval": [json_number(back(mean - half)), json_number(back(mean + half))],
        "method": f"{space}, Student t({k - 1}) over {k} series",
        "n": k,
    }


def _spec_of(name: str, spectrum: dict) -> dict:
    keys = {"alpha_s", "s1", "u0", "rank"}
    spec = spectrum.get(name) if keys - spectrum.keys() else spectrum
    if not isinstance(spec, dict) or keys - spec.keys():
        raise ValueError(f"spectrum must be one dict of {sorted(keys)} (+ kappa) or one per series; none for {name!r}")
    return spec


def bridge(series: dict, spectrum: dict, kappa_loss: float | dict | None = None) -> dict:
    """Measured against theory growth of W(T), per series and pooled, and kappa_H against kappa_loss.

    Per series: omega_measured (``growth_exponent``), omega_theory (the same slope of log W_theory(T;
    kappa_loss) on the series' T), their difference, and kappa_H (``kappa_from_trace``). Pooled over k
    series: each quantity's mean with a 95% Student-t(k-1) interval (kappas: geometric means, in log
    space), the difference paired by series. With one series there is no pooled interval; the
    regression s.e. of omega_measured is reported instead.

    Parameters
    ----------
    series : dict
        {name: (T, W)}: each series' pre-training amounts (> 0) and measured traces (> 0).
    spectrum : dict
        One dict(alpha_s=, s1=, u0=, rank=, kappa=) for every series, or {name: such dict} per series
        (the linear model fitted to that series' loss curve); ``kappa`` is its loss-fitted time map.
    kappa_loss : float, dict or None
        The time map of omega_theory, one for all or {name: kappa} (> 0); None, or a series the dict
        lacks, takes ``spectrum``'s kappa.

    Returns
    -------
    dict
        JSON-able: ``per_series`` (a list of dicts), ``pooled`` ({quantity: {value, interval, method,
        n}}) and ``method``.
    """
    if not isinstance(series, dict) or not series:
        raise ValueError(f"series must be a non-empty dict {{name: (T, W)}}; got {type(series).__name__}")
    rows = []
    for name, (T, W) in series.items():
        spec = _spec_of(name, spectrum)
        kappa = kappa_loss.get(name) if isinstance(kappa_loss, dict) else kappa_loss
        kappa = spec.get("kappa") if kappa is None else kappa
        if kappa is None or not kappa > 0:
            raise ValueError(f"kappa_loss of series {name!r} must be > 0 (from kappa_loss or spectrum); got {kappa}")
        rows.append(_per_series(name, T, W, spec, float(kappa)))
    column = {key: [row[key] for row in rows] for key in rows[0]}
    pooled = {key: _pooled(column[key]) for key in ("omega_measured", "omega_theory", "omega_difference")}
    pooled |= {key: _pooled(column[key], log=True) for key in ("kappa_hessian", "kappa_loss")}
    pooled["log_kappa_ratio"] = _pooled(column["log_kappa_ratio"])
    pooled["kappa_hessian"]["n_at_bound"] = sum(b is not None for b in column["kappa_hessian_at_bound"])
    if len(rows) == 1:
        pooled["omega_measured"] |= {"se": rows[0]["omega_measured_se"], "dof": rows[0]["omega_measured_dof"]}
        pooled["omega_measured"]["method"] = "none (one series); se: the regression s.e. of its slope, dof n - 2"
    method = "per series: OLS slopes of log W on log T, kappa_H by least squares in log W; pooled: " + (
        "Student-t intervals over series" if len(rows) > 1 else "one series, no pooled interval"
    )
    per_series = [{k: json_number(v) if isinstance(v, float) else v for k, v in row.items()} for row in rows]
    return {"per_series": per_series, "pooled": pooled, "method": method}


def trace_series(frame) -> dict:
    """{series: (T, W)} of the ``hessian_trace`` rows of curvature stores, sorted by T, T > 0.

    The series is the ``run`` column where there is one (stores concatenated under names), else
    ``setup`` (one pre-training series per store; ``seed`` there numbers noise draws, not series).

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows with columns ``metric``, ``pretrain_time``, ``value`` and ``run`` or ``setup``.

    Returns
    -------
    dict
        {name: (T array, W array)}.
    """
    key = "run" if "run" in frame.columns else "setup"
    missing = {key, "metric", "pretrain_time", "value"} - set(frame.columns)
    if missing:
        raise ValueError(f"frame lacks columns {sorted(missing)}; a store has metric, pretrain_time, value, setup")
    rows = frame[(frame["metric"] == "hessian_trace") & (frame["pretrain_time"] > 0)]
    out = {}
    for name, group in rows.groupby(key, sort=True):
        group = group.sort_values("pretrain_time")
        T, W = group["pretrain_time"].to_numpy(float), group["value"].to_numpy(float)
        if np.unique(T).size < T.size:
            raise ValueError(f"series {name!r} has several hessian_trace rows at one T; name series by a 'run' column")
        out[str(name)] = (T, W)
    return out

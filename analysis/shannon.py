"""The Shannon scaling law of perturbed and fine-tuned loss (Ouyang et al. 2026, arXiv 2605.23901), at
one model size, as a rival to the linear model in ``ovt compare``.

The law reads training as transmission over a noisy channel: the loss falls with the signal-to-noise
ratio, L = 1 / (1 + SNR), SNR = a1 N^b1 D^b2 / (a2 + a3 N^b3 D^b4), with N parameters, D tokens, and a
perturbation entering the noise term. At one model size N the N powers are constants; a log-loss in
nats needs a floor and a scale; the perturbation of size m adds noise that grows with D. So here

    L(T, m) = E + L0 / (1 + a T^b / (1 + c m^p T^d)),          excess S = L(T, m) - L(T, 0),

seven parameters (E, L0, a, b, c, p, d), T in units of the family's geometric-mean T. At large SNR the
excess is L0 c m^p T^(d - b) / a: the decomposition's power law; where the perturbation's noise
dominates it saturates at L0 - (L(T, 0) - E). The base is monotone and the perturbed loss can be
U-shaped: the law's account of overtraining. NumPy/SciPy, no I/O.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from scipy import optimize

from analysis.phenomenology import Goodness, goodness

NAMES = ("E", "L0", "a", "b", "c", "p", "d")


@dataclasses.dataclass(frozen=True)
class ShannonFit:
    """Fitted (E, L0, a, b, c, p, d) on T / t_ref; ``at_bounds`` names parameters left on a bound."""

    E: float
    L0: float
    a: float
    b: float
    c: float
    p: float
    d: float
    t_ref: float
    at_bounds: tuple[str, ...]
    goodness: Goodness
    n_points: int
    name = "Shannon law"
    n_params = len(NAMES)

    def params(self) -> dict:
        return {n: getattr(self, n) for n in NAMES}

    def loss(self, T, m):
        """L(T, m) on the family's axis T (array) for size m (0: the base)."""
        x = np.asarray(T, float) / self.t_ref
        noise = 1 + self.c * float(m) ** self.p * x**self.d if m > 0 else 1.0
        return self.E + self.L0 / (1 + self.a * x**self.b / noise)

    def predict(self, T, sizes) -> tuple[np.ndarray, np.ndarray]:
        """(base (n,), excess (k, n)) on the family's axis T for ``sizes``."""
        base = self.loss(T, 0.0)
        return base, np.array([self.loss(T, m) - base for m in np.atleast_1d(sizes)])


@dataclasses.dataclass(frozen=True)
class ShannonCurves:
    """The law as one of ``analysis.model_comparison``'s curve models."""

    name = "Shannon law"
    n_params = len(NAMES)

    def fit(self, T, base, sizes, S) -> ShannonFit:
        return fit_shannon(T, base, sizes, S)


def fit_shannon(T, base, sizes, S) -> ShannonFit:
    """Fit the law to a family's base curve and every size's excess at once, in log space (the points
    ``fit_joint`` of the linear model uses: log base, log S where S > 0).

    Bounded least squares over (E, log L0, log a, b, log c, p, d) with E in [0, min base], b in
    [0.01, 5], p in [0, 8], d in [-3, 5], from a grid of starts (b in {0.5, 1}, d - b in {0.2, 0.6},
    p in {1, 2}). Refuses T <= 0, base <= 0, mismatched shapes and fewer than 3 distinct T.

    Parameters
    ----------
    T : array, shape (n,)
        Pre-training amounts (> 0).
    base : array, shape (n,)
        The base loss (> 0).
    sizes : array, shape (k,)
        Modification sizes (> 0).
    S : array, shape (k, n)
        The measured excess of each size (NaN or <= 0: left out).

    Returns
    -------
    ShannonFit
    """
    T, base, sizes, S = (np.asarray(v, float) for v in (T, base, sizes, S))
    if T.ndim != 1 or base.shape != T.shape or S.shape != (sizes.size, T.size):
        raise ValueError(
            f"T {T.shape}, base {base.shape}, sizes {sizes.shape}, S {S.shape}: need (n,), (n,), (k,), (k, n)"
        )
    if np.unique(T).size < 3 or np.any(T <= 0) or np.any(base <= 0) or np.any(sizes <= 0):
        raise ValueError("a Shannon-law fit needs >= 3 distinct T > 0, base > 0 and sizes > 0")
    t_ref = float(np.exp(np.mean(np.log(T))))
    x = T / t_ref
    ok = np.isfinite(S) & (S > 0)
    y = np.concatenate([np.log(base), np.log(S[ok])])

    def curves(q):
        E, L0, a, b, c, p, d = q[0], np.exp(q[1]), np.exp(q[2]), q[3], np.exp(q[4]), q[5], q[6]
        snr0 = a * x**b
        clean = E + L0 / (1 + snr0)
        noise = 1 + c * sizes[:, None] ** p * x[None] ** d
        excess = L0 / (1 + snr0[None] / noise) - L0 / (1 + snr0[None])
        return np.concatenate([np.log(clean), np.log(np.maximum(excess, 1e-300))[ok]])

    def residual(q):
        return curves(q) - y

    e_max = float(base.min())
    lower = [0.0, np.log(1e-6), np.log(1e-8), 0.01, np.log(1e-12), 0.0, -3.0]
    upper = [e_max, np.log(1e3 * base.max()), np.log(1e8), 5.0, np.log(1e12), 8.0, 5.0]
    starts = []
    for E, b, rise, p in itertools.product((0.0, 0.5 * e_max), (0.5, 1.0), (0.2, 0.6), (1.0, 2.0)):
        L0 = 2 * (base.max() - E)
        a = max(L0 / max(base[np.argmin(np.abs(np.log(x)))] - E, 1e-9) - 1, 1e-6)
        S_mid = np.nanmedian(np.where(ok, S, np.nan))
        c = max(S_mid * a / L0, 1e-9)
        starts.append(np.clip([E, np.log(L0), np.log(a), b, np.log(c), p, b + rise], lower, upper))
    starts.sort(key=lambda q0: float(np.sum(residual(q0) ** 2)))
    best = None
    for q0 in starts[:6]:
        fit = optimize.least_squares(residual, q0, bounds=(lower, upper), x_scale="jac", max_nfev=400)
        if best is None or fit.cost < best.cost:
            best = fit
    q = best.x
    at_bounds = tuple(n for n, active in zip(NAMES, best.active_mask) if active)
    values = (q[0], np.exp(q[1]), np.exp(q[2]), q[3], np.exp(q[4]), q[5], q[6])
    return ShannonFit(*map(float, values), t_ref, at_bounds, goodness(y, y + best.fun), int(y.size))

"""The joint fit of the linear model with its link (``theory.linear_fit.fit_joint``): JAX's forward-mode
Jacobian against SciPy's finite differences, side by side, from the same start on the same family.

The family is the committed CPU validation's Gaussian one (``paper_figures/reference/llm``: 6
checkpoints, gamma 0.5-4, 3 draws each): its base log perplexity and mean excess in the fit window.
Both least squares start at the base fit with ref set on its grid (what ``fit_joint`` does) and run
to convergence; reported: median wall time over ``--repeats`` interleaved repeats (after one warm-up
call that compiles), the number of residual evaluations, and the final cost: the answer, which is
what the exact Jacobian buys (finite differences across the link's kink and the 30-decade ref range
stop early at a higher cost). Also one whole ``fit_joint`` call (the u0 profile, every start), and
one on the same base curve, whose u0 profile is cached (what every rival model and held-out size of
a family's comparison costs after its first fit).

    .venv/bin/python benchmarks/fit_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scipy import optimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.families import seed_mean  # noqa: E402
from benchmarks.timing import fmt_s, median_time, print_machine  # noqa: E402
from experiments import compare  # noqa: E402
from theory import linear_fit  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1] / "paper_figures" / "reference" / "llm"


def family():
    """(T, base, sizes, S) of the reference store's Gaussian family, in its fit window."""
    found, _, _ = compare.plan([REFERENCE], Path("/tmp/fit_speed_unused"))
    fam = next(f for f in found if f.modification == "gaussian")
    mask = fam.mask
    return fam.T[mask], seed_mean(fam.base)[mask], fam.sizes, seed_mean(fam.excess())[:, mask]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    T, base, sizes, S = family()
    problem = linear_fit._Problem(32, "gaussian", T, base, S, sizes, link=True)
    problem, fits, _ = linear_fit._profiled(problem)
    lower, upper = problem.bounds(base_only=False)
    residual, jacobian = problem.functions(base_only=False)
    start = linear_fit.ref_start(problem, fits[0].x, 1.0)

    def solve(jac):
        return optimize.least_squares(residual, start, jac=jac, bounds=(lower, upper), x_scale="jac", max_nfev=400)

    runs = {"JAX jacfwd": jacobian, "finite differences (2-point)": "2-point"}
    results = {name: solve(jac) for name, jac in runs.items()}  # warm-up: compiles the model and its Jacobian
    times = {name: median_time(lambda jac=jac: solve(jac), args.repeats)[0] for name, jac in runs.items()}

    def whole_fit(cold: bool):
        if cold:  # the base curve's u0 profile computed afresh, as for a family's first fit
            linear_fit._base_profile.cache_clear()
        return linear_fit.fit_joint(T, base, sizes, S, "gaussian")

    whole = {cold: median_time(lambda cold=cold: whole_fit(cold), args.repeats)[0] for cold in (True, False)}
    print_machine()
    print(f"{'Jacobian':<30} {'wall (median)':>14} {'residual calls':>15} {'final cost':>12}")
    for name, fit in results.items():
        print(f"{name:<30} {fmt_s(times[name]):>14} {fit.nfev:>15} {fit.cost:>12.6g}")
    ratio = times["finite differences (2-point)"] / times["JAX jacfwd"]
    print(f"ratio (finite differences / JAX): {ratio:.2f}x")
    print(f"one whole fit_joint (u0 profile, every start): {fmt_s(whole[True])}")
    print(
        f"... again on the same base curve (another rival or held-out size; profile cached): {fmt_s(whole[False])}"
        f" ({whole[True] / whole[False]:.1f}x faster)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

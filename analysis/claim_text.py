"""What the claims say and how they are shown: each claim's statement, statistic and rule, the order of
a verdict table, and the table as Markdown.
"""

from __future__ import annotations

import math

H_GAMMAS = 1  # claim (h) uses this many of the smallest gammas
HESSIAN_BAND = (0.8, 1.25)  # claim (h)'s region for measured / predicted

STATEMENTS = {
    "a": "Sensitivity to Gaussian parameter noise grows monotonically with pre-training tokens",
    "a'": "Sensitivity to fine-tuning grows with pre-training tokens (forgetting F(T) rises with T)",
    "b": "The perturbed pre-training loss is U-shaped in tokens (an interior T*) at some gamma",
    "c": "The perturbed-loss T* is earlier for larger gamma",
    "d": "Fine-tuning at a fixed lr gives a U-shaped pre-training loss",
    "e": "The fine-tuning T* is earlier for larger lr",
    "f": "Tuning the lr per checkpoint reduces but does not remove the degradation",
    "g": "An L2 pull toward the checkpoint delays T*",
    "h": "The Gaussian excess NLL is (gamma^2/2) x the noise-weighted Hessian trace",
    "i": "Sensitivity grows with pre-training tokens on un-annealed (WSD trunk) checkpoints too",
    "j": "At equal tokens the annealed checkpoint is more sensitive than the un-annealed one",
    "k": "A mitigation reduces forgetting at the largest pre-training time (its costs to the base model and to the "
    "fine-tuning task, and its shift of T*, stated beside)",
    "m": "Forgetting after multimodal adaptation grows with pre-training tokens",
    "m'": "After multimodal adaptation at a fixed lr the pre-training loss is U-shaped in tokens at some lr",
    "q": "Sensitivity to post-training quantization grows with pre-training tokens",
    "q'": "The quantized pre-training loss is U-shaped in tokens (an interior T*) at some bit width",
}


_U = "fall L(T_first) - L(T_i*) and rise L(T_last) - L(T_i*), i* = interior argmin, L = log ppl"


STATISTICS = {
    "a": "Spearman rho(T, Delta(T)), Delta = mean over draws of log ppl perturbed - log ppl unperturbed",
    "a'": "Spearman rho(T, F(T)), F = mean over fine-tuning orders of log ppl after fine-tuning - log ppl before",
    "b": f"{_U} perturbed",
    "c": "log T*(next larger gamma) - log T*(gamma)",
    "d": f"{_U} after fine-tuning",
    "e": "log T*(next larger lr) - log T*(lr)",
    "f": "tuned rise, and mean fixed-lr rise - tuned rise; rise = L(T_last) - L(T_i), i = argmin before the last",
    "g": "log T*(lr, reg) - log T*(lr, reg=0)",
    "h": "measured / predicted Delta NLL, predicted = (gamma^2/2) x noise-weighted Hessian trace",
    "i": "Spearman rho(T, Delta(T)) on the trunk's checkpoints, Delta = mean over draws of log ppl modified - "
    "log ppl unmodified (Gaussian noise, fine-tuning, quantization)",
    "j": "per series, the mean over checkpoints of Delta_annealed(T) - Delta_trunk(T) (the same tokens T, the same "
    "modification and level)",
    "k": "F_baseline(T) - F_arm(T) at the largest T both arms measured, F = mean over fine-tuning orders of log ppl "
    "after fine-tuning - log ppl before, paired by series (nats; also in % of the baseline's mean F); beside it "
    "ln T*(arm) / T*(baseline) of the pooled post-fine-tuning curves, the base cost (log ppl before fine-tuning, "
    "arm - baseline) and the task cost (in-task held-out loss after fine-tuning, arm - baseline, nats)",
    "m": "Spearman rho(T, F(T)), F = mean over orders of log ppl after stage 2 (projector and model) - log ppl before",
    "m'": f"{_U} after multimodal adaptation (stage 2)",
    "q": "Spearman rho(T, Delta_b(T)), Delta_b = log ppl after round-to-nearest b-bit quantization - log ppl before",
    "q'": f"{_U} after b-bit quantization",
}


_EVERY = "every part must PASS (FAIL if any part FAILs, else INCONCLUSIVE)"


_SOME = (
    "PASS if some {0} PASSes, FAIL if every {0} FAILs, else INCONCLUSIVE; Bonferroni over the k {0}s: each "
    "interval at level 1 - 0.05/k"
)


_SIDES = "a {0} PASSes if the intervals of its fall and its rise both lie above 0, FAILs if either lies below 0"


_RANKS = (
    "at each {0}, the mean over series of Spearman's rho tested against its exact null distribution (every "
    "ordering of the checkpoints equally likely, independent series): PASS if P(mean rho >= observed) < "
    "0.025, FAIL if P(mean rho <= observed) < 0.025, else INCONCLUSIVE; {1}"
)


RULES = {
    "a": _RANKS.format("gamma", _EVERY),
    "a'": _RANKS.format("fixed lr", _EVERY),
    "b": f"{_SIDES.format('gamma')}; {_SOME.format('gamma')}",
    "c": "for consecutive gammas with an interior pooled T*, PASS if the 95% interval of the log T* step lies "
    f"below 0, FAIL if above; {_EVERY}",
    "d": f"{_SIDES.format('fixed lr')}; {_SOME.format('fixed lr')}",
    "e": "for consecutive fixed lrs with an interior pooled T*, PASS if the 95% interval of the log T* step lies "
    f"below 0, FAIL if above; {_EVERY}",
    "f": "the lr tuned per checkpoint and batch order for the lowest loss on held-out examples of the "
    "fine-tuning task; runs at or above the uniform guess (log V) left out; PASS if the 95% intervals of the "
    "tuned rise (not removed) and of the reduction (reduced) both lie above 0, FAIL if either lies below 0, "
    "else INCONCLUSIVE",
    "g": "for each (lr, reg > 0) whose reg = 0 curve has an interior pooled T*, PASS if the 95% interval of the "
    f"log T* shift lies above 0, FAIL if below; {_EVERY}",
    "i": _RANKS.format("level of a modification (gamma, lr, bit width)", _EVERY) + "; the row i: every modification",
    "j": "at each level of a modification, PASS if the 95% interval of the paired gap (Student-t over series) lies "
    f"above 0, FAIL if below; {_EVERY}; the row j: every modification",
    "k": "for each arm (rows k:ARM), PASS if the 95% interval of the reduction (paired Student-t over series) lies "
    "above 0, FAIL if below, else INCONCLUSIVE; T* (PASS: later, FAIL: earlier, from the kinds of the pooled "
    "curves) and the costs are stated beside, not judged in the verdict; the row k: "
    f"{_SOME.format('arm')}",
    "m": _RANKS.format("fixed lr", _EVERY),
    "m'": f"{_SIDES.format('fixed lr')}; {_SOME.format('fixed lr')}",
    "q": _RANKS.format("bit width", _EVERY),
    "q'": f"{_SIDES.format('bit width')}; {_SOME.format('bit width')}",
    "h": f"PASS if the 95% interval of the ratio lies inside ({HESSIAN_BAND[0]}, {HESSIAN_BAND[1]}), FAIL if it "
    "lies outside that band, else INCONCLUSIVE",
}


def claim_order(claim: dict) -> tuple:
    """Claims in the order a, a', b, ..., h, then h's per-gamma rows by gamma.

    Parameters
    ----------
    claim : dict
        One entry of ``evaluate_claims``.

    Returns
    -------
    tuple
        The sort key.
    """
    return claim["claim"].split(":")[0], claim.get("gamma", -math.inf)


def number_text(x) -> str:
    return "open" if x is None or not math.isfinite(x) else f"{x:.4g}"


def interval_text(claim: dict) -> str:
    """``[lo, hi]`` of an interval, ``p = ...`` of a rank test, ``-`` for neither.

    Parameters
    ----------
    claim : dict
        One entry of ``evaluate_claims``.

    Returns
    -------
    str
    """
    if claim.get("p_value") is not None and math.isfinite(claim["p_value"]):
        return f"p = {claim['p_value']:.2g}"
    if claim["interval"] is None:
        return "-"
    return f"[{number_text(claim['interval'][0])}, {number_text(claim['interval'][1])}]"


def render_markdown(claims: list[dict]) -> str:
    """A Markdown table of ``claims``: claim, statement, statistic, value (at which part), 95% interval
    (or a rank test's p), n (series x draws), verdict, rule.

    Parameters
    ----------
    claims : list of dict
        The entries of ``evaluate_claims``.

    Returns
    -------
    str
        The table, one row per entry.
    """
    lines = [
        "| claim | statement | statistic | value | 95% interval or p | n | verdict | rule |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        value = "-" if not math.isfinite(c["value"]) else number_text(c["value"]) + (f" ({c['at']})" if c["at"] else "")
        interval = interval_text(c)
        n = f"{c['n_series']} series x {c['n_draws']} draws"
        cells = [c["claim"], c["statement"], c["statistic"], value, interval, n, f"**{c['verdict']}**", c["rule"]]
        lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    return "\n".join(lines) + "\n"

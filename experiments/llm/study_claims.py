"""The claims of an ``ovt llm study``, per model size, from its stage folders: (a)-(h) of
``analysis.claims`` on the perturbation table, the first dataset's fine-tuning grid with the L2-pull
runs and the curvature run (claim h: the antithetic excess at the smallest curvature gamma against
(gamma^2/2) x the Hessian trace), claims a', d-f again for every other dataset; then
``analysis.modification_claims``: (q), (q') on the quantization of the annealed checkpoints, and on the series
with a WSD trunk (``Study.trunk_seeds``) (i) on the trunk's checkpoints and (j) annealed against trunk
at equal tokens, for Gaussian noise, fine-tuning on the first dataset and quantization.

The pre-training seed of a row is ``series_seed``; draws are averaged within a series before a
series-level statistic, so every interval rests on the series.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import claim_text
from analysis.claims import evaluate_claims
from analysis.modification_claims import anneal_claims, multimodal_claims, quantization_claims, trunk_claims
from rundir import store

SERIES = "series_seed"
FINETUNE_CLAIMS = ("a'", "d", "e", "f", "g")


def load(out: Path, stage: str, study, size: str, seeds=None, arm: str = "", missing_ok: bool = False) -> pd.DataFrame:
    """Every series' table of one stage folder (``perturb``, ``finetune/shakespeare``, ...) for one
    size (``seeds``: those series only; ``arm``: a pre-training arm's series), with its ``size`` and
    ``series_seed``; ``missing_ok`` skips the series with no table instead of failing."""
    paths = {
        seed: out / stage / study.series_name(size, seed, arm) / store.METRICS
        for seed in (study.seeds_of(size) if seeds is None else seeds)
    }
    frames = [
        pd.read_parquet(path).assign(size=size, series_seed=seed)
        for seed, path in paths.items()
        if not missing_ok or path.is_file()
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def tables(study, out: Path, size: str) -> dict[str, pd.DataFrame]:
    """Every stage's table of one size, read once: ``perturb``, the L2-pull runs joined (``reg``), one
    per fine-tuning dataset (keyed by the dataset), and ``curvature``, ``quantize`` and the trunk's
    (``trunk/perturb``, ``trunk/finetune``, ``trunk/quantize``) where the study has them."""
    found = {"perturb": load(out, "perturb", study, size)}
    if study.curvature_gammas:
        found["curvature"] = load(out, "curvature", study, size)
    regs = [load(out, f"finetune-reg/reg={r:g}", study, size) for r in study.regs]
    found["reg"] = pd.concat(regs, ignore_index=True) if regs else pd.DataFrame()
    for data in study.finetune_data:
        found[data] = load(out, study.finetune_stage(data), study, size)
    if study.quant_bits:
        found["quantize"] = load(out, "quantize", study, size)
    if study.multimodal_lrs and dict(study.multimodal_seeds).get(size):
        found["multimodal"] = load(out, "multimodal", study, size, dict(study.multimodal_seeds)[size])
    seeds = dict(study.trunk_seeds).get(size, ())
    for kind, stage, wanted in (
        ("perturb", "perturb", study.trunk_gammas),
        ("finetune", study.finetune_stage(study.finetune_data[0]), study.trunk_lrs),
        ("quantize", "quantize", study.quant_bits),
    ):
        if seeds and wanted:
            found[f"trunk/{kind}"] = load(out, f"trunk/{stage}", study, size, seeds)
    return found


def uniform_loss(size: str) -> float:
    """log V of a model size: the log perplexity of a uniform guess over its vocabulary."""
    from llm_validation.models import PRESETS

    return math.log(PRESETS[size].vocab_size)


def _excess_as_perturb(curvature: pd.DataFrame) -> pd.DataFrame:
    """The curvature run's antithetic excess as a perturbation table (perplexity = exp(base NLL +
    excess)), for claim (h) of ``analysis.claims``."""
    keys = ["checkpoint", "pretrain_time", SERIES]
    base = curvature[curvature.metric == "hessian_trace"][keys + ["mean_nll"]].rename(columns={"mean_nll": "base"})
    pairs = curvature[curvature.metric == "delta_nll"][keys + ["gamma", "seed", "value"]].merge(base, on=keys)
    none = base.assign(modification="none", gamma=np.nan, seed=0, value=np.exp(base.base))
    noisy = pairs.assign(modification="gaussian", value=np.exp(pairs.base + pairs.value))
    columns = keys + ["modification", "gamma", "seed", "value"]
    return pd.concat([none[columns], noisy[columns]], ignore_index=True).assign(metric="perplexity")


def size_claims(study, size: str, found: dict[str, pd.DataFrame]) -> list[dict]:
    """Claims (a)-(h) for one size on its first dataset (h at the smallest curvature gamma from the
    antithetic excess, then one row per perturbation gamma), then (a') and (d)-(f) on every other
    dataset, then (q), (q'), (i) and (j) where the study measured them."""
    first, curvature = study.finetune_data[0], found.get("curvature")
    traces = None  # a study without curvature runs leaves (h) INCONCLUSIVE, "no data"
    if curvature is not None:
        traces = curvature[curvature.metric == "hessian_trace"].rename(columns={"value": "trace"})
    grid = pd.concat([found[first], *([found["reg"]] if len(found["reg"]) else [])], ignore_index=True)
    ceiling = uniform_loss(size)
    claims = evaluate_claims(found["perturb"], grid, traces, series_column=SERIES, uniform_loss=ceiling)
    if curvature is not None:
        h = evaluate_claims(_excess_as_perturb(curvature), None, traces, series_column=SERIES)
        band = next((c.get("band") for c in claims if c["claim"] == "h"), None)  # over every perturbation gamma
        claims = [c for c in claims if c["claim"] != "h"] + [c | {"band": band} for c in h if c["claim"] == "h"]
    entries = [c | {"size": size, "dataset": first if c["claim"] in FINETUNE_CLAIMS else ""} for c in claims]
    for data in study.finetune_data[1:]:
        other = evaluate_claims(None, found[data], series_column=SERIES, uniform_loss=ceiling)
        entries += [c | {"size": size, "dataset": data} for c in other if c["claim"] in ("a'", "d", "e", "f")]
    entries += [c | {"size": size, "dataset": ""} for c in modification_claims(study, found)]
    return sorted(entries, key=claim_text.claim_order)


def modification_claims(study, found: dict[str, pd.DataFrame]) -> list[dict]:
    """(q), (q') where the study quantizes; (m), (m') where it adapts to the visual world; (i), (j) on
    the modifications it measured on a trunk."""
    claims = quantization_claims(found["quantize"], SERIES) if "quantize" in found else []
    claims += multimodal_claims(found["multimodal"], SERIES) if "multimodal" in found else []
    kinds = {"perturb": "gaussian", "finetune": "finetune", "quantize": "quantization"}
    trunk = {kinds[k]: found[f"trunk/{k}"] for k in kinds if f"trunk/{k}" in found}
    if not trunk:
        return claims
    annealed = {
        "gaussian": found["perturb"],
        "finetune": found[study.finetune_data[0]],
        "quantization": found.get("quantize"),
    }
    return claims + trunk_claims(trunk, SERIES) + anneal_claims(annealed, trunk, SERIES)

"""``ovt llm quantize``: perplexity of post-training-quantized checkpoints into a result store.

    ovt llm quantize [--preset validation [--quick]] [FIELD=VALUE ...] [--out DIR] [--quiet]
                     --model M [--revisions R1,R2 | --tokens 1e9,2.3T] --eval-text FILE
                     [--bits 8,4,3] [--rounding nearest|stochastic|nearest,stochastic] [--seeds K]
                     [--seq-len 128] [--batch-size 8] [--max-blocks N] [--threads N]
                     [--dtype float32|bfloat16] [--device cpu|cuda]

The run is a ``experiments.llm.config_measures.QuantizeRun``. Every ``nn.Linear`` weight W of a checkpoint (a
tied lm_head being the input embedding) is quantized symmetrically per output channel
(``llm_validation.quantize``): row r onto Delta_r x {-q, ..., q}, q = 2^(b-1) - 1,
Delta_r = max_j |W_rj| / q, rounding each entry of W / Delta_r to the nearest integer
(|Q(W) - W| <= Delta_r / 2) or stochastically (up with probability frac(W / Delta_r): unbiased,
entry variance Delta_r^2 p (1 - p)), in float32 and cast back to the weights' dtype.

Per checkpoint (one model in memory at a time), the held-out perplexity of the checkpoint itself
(``modification='none'``, ``bits`` NaN, ``rounding`` "", ``seed`` 0), then, for each bit width and
rounding, one row with ``modification='quantization'``, ``metric='perplexity'``, ``bits`` (float)
and ``rounding``: round-to-nearest is one row (seed 0), stochastic rounding ``seeds`` rows (draw k
= 0..K-1 takes the same uniforms on every checkpoint, so draws are paired across the series).
``mean_nll``, ``n_tokens`` and ``diverged`` are perturb's (a mean loss that overflows the
perplexity is recorded, never a crash). Derived rows: T* of the quantized perplexity (mean over
draws) per (bits, rounding). The manifest's ``quantization`` records the grid, the tensors and the
names a tied one also goes by (the first checkpoint's; the series shares its architecture).

The token set, the series' checks and the lifecycle (resume, workers, cluster jobs) are every
checkpoint run's (``experiments.llm.series``, ``experiments.llm.kinds.base``). Torch only: the JAX
backend of perturb has no quantization.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import pandas as pd

from experiments.llm.config_measures import QuantizeRun
from experiments.llm.kinds.base import CheckpointKind
from experiments.llm.lifecycle import checkpoint_summary
from experiments.llm.series import check_device, read_back
from rundir import store
from rundir.derived import perturb_inflection_rows

if TYPE_CHECKING:  # annotations only: torch loads when a run starts, after its input is checked
    from llm_validation.evaluate import Perplexity
    from llm_validation.revisions import Revision

FIELDS = ("bits", "rounding", "seeds")  # the quantization's own settings
GRID = (
    "symmetric per output channel: q = 2^(bits-1) - 1, Delta_r = max_j |W_rj| / q, Q(W)_rj = Delta_r k_rj, "
    "|k| <= q; nearest: k = round(W / Delta) (ties to even); stochastic: k = floor(x) + [u < frac(x)], "
    "u ~ U[0, 1) keyed by blake2b(seed:rounding:NAME:chunk); float32, cast back to the weights' dtype"
)


class Quantize(CheckpointKind):
    name = "quantize"
    CONFIG = QuantizeRun
    HELP = "perplexity of every checkpoint with its linear weights quantized (per channel, b bits)"
    unit = "eval"

    def check(self, cfg: QuantizeRun) -> None:
        """A config built in Python has its quantization fields read as a flag's text would be: the
        same refusals, in the same words (``bits=1 must be >= 2 and <= 16``)."""
        read_back(cfg, FIELDS)
        check_device(cfg.device)

    def units_per_checkpoint(self, plan) -> int:
        return 1 + len(settings(plan.cfg))

    def derive(self, table: pd.DataFrame) -> pd.DataFrame:
        return perturb_inflection_rows(table, "quantization", ("bits", "rounding"))

    def manifest_fields(self, plan) -> dict:
        return {"devices": [plan.cfg.device], "quantization": None}  # the first checkpoint's record

    def measure(self, plan, index: int, revision, progress) -> tuple[pd.DataFrame, object, dict]:
        """One checkpoint loaded, evaluated as it is, then under every (bits, rounding, draw)."""
        import torch

        from llm_validation.checkpoints import load_checkpoint
        from llm_validation.evaluate import perplexity
        from llm_validation.quantize import Quantization, quantization_record

        cfg = plan.cfg
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
        model, _ = load_checkpoint(plan.source, revision.name, dtype, cfg.device)
        score = functools.partial(perplexity, model, plan.blocks, cfg.batch_size)
        results = [("none", math.nan, "", 0, score())]
        progress.update()
        quantization = Quantization(model)  # one exact copy serves every setting
        for bits, rounding, seed in settings(cfg):
            with quantization.applied(bits, rounding, seed):
                results.append(("quantization", float(bits), rounding, seed, score()))
            progress.update()
        record = {"grid": GRID, "checkpoint": revision.name} | quantization_record(model)
        return _rows(plan, revision, results), model, {"run": {"quantization": record}} if index == 0 else {}

    def report(self, plan, table: pd.DataFrame) -> str:
        return f"quantized perplexity, {len(table)} rows -> {plan.out}\n{summary(table)}"


KIND = Quantize()


def settings(cfg: QuantizeRun) -> list[tuple[int, str, int]]:
    """(bits, rounding, seed) of every quantization of a checkpoint: nearest once, stochastic per draw."""
    return [
        (bits, rounding, seed)
        for bits in cfg.bits
        for rounding in cfg.rounding
        for seed in (range(cfg.seeds) if rounding == "stochastic" else (0,))
    ]


def _rows(plan, revision: Revision, results: list[tuple[str, float, str, int, Perplexity]]) -> pd.DataFrame:
    return store.block(
        source="llm",
        setup=plan.setup,
        checkpoint=revision.name,
        pretrain_time=float(revision.tokens),
        modification=[m for m, *_ in results],
        seed=[s for *_, s, _ in results],
        metric="perplexity",
        value=[p.perplexity for *_, p in results],
        bits=[b for _, b, *_ in results],
        rounding=[r for _, _, r, *_ in results],
        mean_nll=[p.mean_nll for *_, p in results],
        n_tokens=[p.n_tokens for *_, p in results],
        diverged=[p.diverged for *_, p in results],
    )


def _label(bits: float, rounding: str) -> str:
    return f"{bits:g}-bit {rounding}"


def summary(table: pd.DataFrame) -> str:
    """Per checkpoint: base perplexity and the mean quantized perplexity of each (bits, rounding);
    then T* of each."""
    rows, infl = table[table.checkpoint != "inflection"], table[table.checkpoint == "inflection"]
    base = rows[rows.modification == "none"].set_index("checkpoint")["value"].rename("none")
    quantized = rows[rows.modification == "quantization"]
    means = quantized.groupby(["checkpoint", "bits", "rounding"])["value"].mean().unstack(["bits", "rounding"])
    means = means[sorted(means.columns, key=lambda c: (-c[0], c[1]))]
    means.columns = [_label(*c) for c in means.columns]
    return checkpoint_summary(rows, [base, means], infl, (_label(b, r) for b, r in zip(infl.bits, infl.rounding)))

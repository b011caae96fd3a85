"""The bad-input battery: every ``ovt`` subcommand, every case the contract names.

Each case asserts the whole contract (docs/ARCHITECTURE.md, "CLI contract"): exit code 2, exactly one
line on stderr (``ovt: error: ...``) that names the offending value or file, no traceback, and
nothing written under ``--out`` (absent before: still absent; present before: byte-identical).

Cases are argv templates; ``{OUT}`` is the run directory under test and the other ``{NAME}``
placeholders are files the fixtures below lay out (a tiny local checkpoint series, a binary file,
broken result stores).
"""

from __future__ import annotations

import json
import math
import os

import pandas as pd
import pytest

from experiments import cli
from rundir import store

from .llm_validation.conftest import make_tokenizer, write_folder_series

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MANY = ",".join(str(0.001 * (i + 1)) for i in range(400))  # 400 values: 400 x 400 cells > the sweep limit

# One case a line: the battery reads as a table.
# fmt: off
THEORY = [
    (["theory", "nonexistent"], "'nonexistent' is unknown"),
    (["theory", "smoke", "bogus=1"], "'bogus' is unknown"),
    (["theory", "smoke", "gamma=abc"], "gamma='abc' is not a valid float"),
    (["theory", "smoke", "gamma=-0.5"], "gamma=-0.5 must be >= 0"),
    (["theory", "smoke", "depth=2.5"], "depth='2.5' is not a valid int"),
    (["theory", "smoke", "method=magic"], "method='magic' is not allowed"),
    (["theory", "smoke", "gamma"], "'gamma' must look like FIELD=VALUE"),
    (["theory", "--list", "smoke"], "--list takes no preset"),
    (["theory"], "a preset is required"),
    (["theory", "smoke", "t_min=10", "t_max=1"], "t_min=10.0 must be < t_max=1.0"),
    (["theory", "smoke", "gamma=inf"], "gamma='inf' must be a finite number"),
    (["theory", "smoke", "gamma=1e400"], "gamma='1e400' must be a finite number"),
    (["theory", "smoke", "gamma=0.2,nan"], "gamma='nan' must be a finite number"),
    (["theory", "smoke", "t_max=inf"], "t_max='inf' must be a finite number"),
    (["theory", "smoke", "lr=-inf"], "lr='-inf' must be a finite number"),
    (["theory", "smoke", "n_t=1e400"], "n_t='1e400' must be a whole number"),
    (["theory", "smoke", "n_t=1000000000"], "n_t=1000000000 is too large; allowed: <= 10,000"),
    (["theory", "smoke", "n_draws=8"], "override key 'n_draws' is unknown"),
    (["theory", "smoke", "depth=100"], "depth=100 is too large"),
    (["theory", "smoke", "steps=0"], "steps=0 must be > 0"),
    (["theory", "smoke", "chunk_size=0"], "chunk_size=0 must be > 0"),
    (["theory", "smoke", "rho=2"], "rho=2.0 must lie in [-1, 1]"),
    (["theory", "smoke", "rank=64"], "rank=64 must be <= min(d_in, d_out, h)=8"),
    (["theory", "smoke", "--chunk", "99"], "--chunk 99 is not a chunk of this sweep"),
    (["theory", "smoke", "--chunk", "-1"], "--chunk -1 must be >= 0"),
    (["theory", "smoke", "--chunk", "x"], "--chunk 'x' is not an integer"),
    (["theory", "smoke", "spectrum=explicit", "spectrum_values="], "spectrum_values is empty"),
    (["theory", "smoke", "spectrum_values=1,2"], "spectrum_values=1.0,2.0 is read only with spectrum=explicit"),
    (["theory", "smoke", "spectrum=explicit", "spectrum_values=1,2,3"], "spectrum_values=1.0,2.0,3.0 must be > 0 and descending"),
    (["theory", "schedule", "budgets=", "--quick"], "budgets is empty"),
    (["theory", "schedule", "budgets=100,50", "--quick"], "budgets=100,50 must be step counts >= 1, strictly increasing"),
    (["theory", "schedule", "budgets=1e9", "--quick"], "budgets=1000000000: the largest is 1,000,000,000 steps"),
    (["theory", "smoke", "method=flow", "dt_max=1e-6"], "t_max / dt_max = 300 / 1e-06"),
    (["theory", "smoke", "replay=1.5"], "replay=1.5 must lie in [0, 1]"),
    (["theory", "smoke", "weight_decay=-0.1"], "weight_decay=-0.1 must be >= 0"),
    (["theory", "smoke", "sam_rho=0.01"], "sam_rho=0.01 needs method=series"),
    (["theory", "smoke", "anneal_fraction=0.5"], "anneal_fraction=0.5 is read only with schedule=wsd"),
    (["theory", "multimodal", "replay=0.3", "--quick"], "replay=0.3 is not read by multimodal=true"),
    (["theory", "smoke", "d_in=4096", "h=4096", "d_out=4096", "n_t=5000"], "this sweep needs an estimated"),
    (["theory", "smoke", f"gamma={MANY}", f"lr={MANY}"], "the grid has 160,000 cells"),
    (["theory", "smoke", "--quiet", "gamma=-1"], "gamma=-1.0 must be >= 0"),
    (["theory", "smoke", "--bogus"], "unrecognized arguments: --bogus"),
    (["theory", "smoke", "--out", "{FILE}"], "is a file"),
    (["theory", "smoke", "--out", "{FILE}/run"], "is not writable"),
    (["theory", "smoke", "--out", "{BAD_JSON_RUN}"], "manifest.json is not valid JSON"),
    (["theory", "smoke", "--out", "{LIST_JSON_RUN}"], "manifest.json holds a list, not a JSON object"),
    (["theory", "smoke", "--out", "{COMPLETE_OTHER_RUN}"], "holds a complete run of another config"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]

FIGURES = [
    (["figures", "--results", "{MISSING}"], "does not exist"),
    (["figures", "--results", "{EMPTY_DIR}"], "holds no run directory"),
    (["figures", "--results", "{BAD_JSON_RUN}"], "manifest.json is not valid JSON"),
    (["figures", "--results", "{LIST_JSON_RUN}"], "manifest.json holds a list, not a JSON object"),
    (["figures", "--results", "{MISSING_COLUMNS_RUN}"], "lack required columns"),
    (["figures", "--results", "{ZERO_ROW_RUN}"], "holds no finite value to draw (0 rows)"),
    (["figures", "--results", "{ALL_NAN_RUN}"], "holds no finite value to draw"),
    (["figures", "--results", "{PRETRAIN_RUN}"], "'llm_pretrain' runs have no figure"),
    (["figures", "--results", "{NOT_PARQUET_RUN}"], "is not a readable parquet table"),
]

COMPARE = [
    (["compare", "--results", "{MISSING}"], "does not exist"),
    (["compare", "--results", "{EMPTY_DIR}"], "holds no run directory"),
    (["compare", "--results", "{BAD_JSON_RUN}"], "manifest.json is not valid JSON"),
    (["compare", "--results", "{MISSING_COLUMNS_RUN}"], "lack required columns"),
    (["compare", "--results", "{ZERO_ROW_RUN}"], "nothing to compare"),
    (["compare", "--results", "{ALL_NAN_RUN}"], "nothing to compare"),
    (["compare", "--results", "{ALL_NAN_RUN}", "--bootstrap", "-1"], "--bootstrap -1 must be >= 0"),
    (["compare", "--results", "{ALL_NAN_RUN}", "--bootstrap", "1e9"], "--bootstrap '1e9' is not an integer"),
    (["compare", "--results", "{ALL_NAN_RUN}", "--bootstrap", "100000000"], "--bootstrap 100000000 must be >= 0 and <= 100,000"),
    (["compare", "--results", "{ALL_NAN_RUN}", "--window", "5,1"], "--window '5,1' must satisfy 0 < TMIN < TMAX"),
    (["compare", "--results", "{ALL_NAN_RUN}", "--window", "1,inf"], "--window '1,inf' must satisfy"),
    (["compare", "--results", "{ALL_NAN_RUN}", "--rank", "1"], "--rank 1 must be >= 2"),
]

REPRODUCE = [
    (["reproduce", "--out", "{FILE}"], "is a file"),
    (["reproduce", "--out", ""], "--out is empty; give a directory"),
    (["theory", "smoke", "--out", " "], "--out is empty; give a directory"),
    (["figures", "--results", ""], "--results is empty; give a directory"),
    (["compare", "--results", "{ALL_NAN_RUN}", "--out", ""], "--out is empty; give a directory"),
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "1K", "--out", ""], "--out is empty; give a directory"),
    (["llm", "study", "study-quick", "--out", ""], "--out is empty; give a directory"),
    (["llm", "study", "study-quick", "--out", "{BROKEN_STUDY}"], "study.json is not valid JSON"),
    (["llm", "study", "study-quick", "--out", "{NULL_STUDY}"], "study.json holds null, not a JSON object"),
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "-5K", "--out", "{OUT}"], "--budgets '-5K' is not a token count"),
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "1K", "--lr", "-0.5", "--out", "{OUT}"], "--lr -0.5 must be > 0"),
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "1K", "--trunk-checkpoints", "maybe", "--out", "{OUT}"], "--trunk-checkpoints 'maybe' is not an integer"),
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "1K", "trunk_checkpoints=1", "--out", "{OUT}"], "trunk_checkpoints=1 is allowed only with mode wsd"),
    (["llm", "pretrain", "--preset", "tiny", "--mode", "wsd", "--budgets", "1K", "trunk_checkpoints=2", "--out", "{OUT}"], "trunk_checkpoints=2 must be a whole number of budgets, 0 to 1"),
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "1K", "seed=,", "--out", "{OUT}"], "seed=',' lists no values"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--gammas", "1", "seeds=, ,", "--out", "{OUT}"], "seeds=', ,' lists no values"),
    (["reproduce", "--frobnicate"], "unrecognized arguments: --frobnicate"),
]

LLM = [
    (["llm", "revisions", "{FILE}"], "is a file"),
    (["llm", "revisions", "./no/such/folder"], "is not an existing folder"),
    (["llm", "revisions", "{EMPTY_DIR}"], "has no checkpoint revisions"),
    (["llm", "frobnicate"], "invalid choice: 'frobnicate'"),
    # pretrain
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "1e400", "--out", "{OUT}"], "1e400"),
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "abc", "--out", "{OUT}"], "'abc' is not a token count"),
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "0", "--out", "{OUT}"], "0"),
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "1e15", "--out", "{OUT}"], "1000T"),
    (["llm", "pretrain", "--preset", "nonexistent", "--budgets", "1K", "--out", "{OUT}"], "'nonexistent'"),
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "1K", "--corpus", "bogus", "--out", "{OUT}"], "'bogus'"),
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "1K", "--mode", "bogus", "--out", "{OUT}"], "'bogus'"),
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "1K", "--lr", "inf", "--out", "{OUT}"], "--lr 'inf'"),
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "1K", "--lr", "nan", "--out", "{OUT}"], "--lr 'nan'"),
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "1K", "--threads", "0", "--out", "{OUT}"], "--threads 0"),
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "1K", "--seq-len", "100000", "--out", "{OUT}"], "100000"),
    (["llm", "pretrain", "--preset", "tiny", "--budgets", "1K", "--out", "{FILE}"], "is a file"),
    # perturb
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--gammas", "-1", "--seeds", "1", "--out", "{OUT}"], "--gammas -1"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--gammas", "abc", "--seeds", "1", "--out", "{OUT}"], "'abc'"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--gammas", "inf", "--seeds", "1", "--out", "{OUT}"], "'inf'"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--gammas", "1", "--seeds", "0", "--out", "{OUT}"], "--seeds 0"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--gammas", "1", "--seeds", "1000000000", "--out", "{OUT}"], "--seeds 1000000000"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--gammas", "1", "--seeds", "1", "--seq-len", "100000", "--out", "{OUT}"], "100000"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--gammas", "1", "--seeds", "1", "--batch-size", "0", "--out", "{OUT}"], "--batch-size 0"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{MISSING}", "--gammas", "1", "--seeds", "1", "--out", "{OUT}"], "does not exist"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{NUMBER_JSONL}", "--gammas", "1", "--seeds", "1", "--out", "{OUT}"], "number.jsonl: line 2: 'text' is int; it must be a string"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{NULL_JSONL}", "--gammas", "1", "--seeds", "1", "--out", "{OUT}"], "null.jsonl: line 3: 'text' is null"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{BROKEN_JSONL}", "--gammas", "1", "--seeds", "1", "--out", "{OUT}"], "broken.jsonl: line 2 is not JSON"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{EMPTY_DIR}", "--gammas", "1", "--seeds", "1", "--out", "{OUT}"], "empty is a folder"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{FIFO}", "--gammas", "1", "--seeds", "1", "--out", "{OUT}"], "fifo is not a regular file"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{BINARY}", "--gammas", "1", "--seeds", "1", "--out", "{OUT}"], "binary.bin"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--tokens", "1e400", "--gammas", "1", "--seeds", "1", "--out", "{OUT}"], "1e400"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--tokens", "abc", "--gammas", "1", "--seeds", "1", "--out", "{OUT}"], "'abc' is not a token count"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--revisions", "step99-tokens9K", "--gammas", "1", "--seeds", "1", "--out", "{OUT}"], "step99-tokens9K"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--revisions", "step512", "--gammas", "1", "--seeds", "1", "--out", "{OUT}"], "revision='step512' is not available"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--revisions", "step-12x", "--gammas", "1", "--seeds", "1", "--out", "{OUT}"], "revision='step-12x' is not a checkpoint name"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--gammas", "1", "--seeds", "1", "--device", "cuda", "--out", "{OUT}"], "device=cuda"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--gammas", "1", "--seeds", "1", "--scale", "bogus", "--out", "{OUT}"], "'bogus'"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--gammas", "1", "--seeds", "1", "--threads", "0", "--out", "{OUT}"], "--threads 0"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--gammas", "1", "--seeds", "1", "--out", "{FILE}"], "is a file"),
    # quantize: flags, overrides, the eval file
    (["llm", "quantize", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--bits", "1", "--out", "{OUT}"], "--bits 1 must be >= 2 and <= 16"),
    (["llm", "quantize", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--bits", "8,17", "--out", "{OUT}"], "--bits 17 must be >= 2 and <= 16"),
    (["llm", "quantize", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--bits", "abc", "--out", "{OUT}"], "--bits 'abc' is not an integer"),
    (["llm", "quantize", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--rounding", "bogus", "--out", "{OUT}"], "--rounding 'bogus' is not allowed; choose one of: nearest, stochastic"),
    (["llm", "quantize", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--seeds", "0", "--out", "{OUT}"], "--seeds 0 must be >= 1"),
    (["llm", "quantize", "--model", "{SERIES}", "--eval-text", "{TEXT}", "bits=1", "--out", "{OUT}"], "bits=1 must be >= 2 and <= 16"),
    (["llm", "quantize", "--model", "{SERIES}", "--eval-text", "{TEXT}", "bits=17", "--out", "{OUT}"], "bits=17 must be >= 2 and <= 16"),
    (["llm", "quantize", "--model", "{SERIES}", "--eval-text", "{TEXT}", "bits=8,abc", "--out", "{OUT}"], "bits='abc' is not an integer"),
    (["llm", "quantize", "--model", "{SERIES}", "--eval-text", "{TEXT}", "rounding=nearest,bogus", "--out", "{OUT}"], "rounding='bogus' is not allowed; choose one of: nearest, stochastic"),
    (["llm", "quantize", "--model", "{SERIES}", "--eval-text", "{TEXT}", "seeds=0", "--out", "{OUT}"], "seeds=0 must be >= 1"),
    (["llm", "quantize", "--model", "{SERIES}", "--eval-text", "{BINARY}", "--out", "{OUT}"], "binary.bin"),
    (["llm", "quantize", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--out", "{FILE}"], "is a file"),
    # finetune
    (["llm", "finetune", "--model", "{SERIES}", "--data", "{TEXT}", "--format", "text", "--lrs", "0", "--steps", "2", "--eval-text", "{TEXT}", "--out", "{OUT}"], "--lrs 0"),
    (["llm", "finetune", "--model", "{SERIES}", "--data", "{TEXT}", "--format", "text", "--lrs", "inf", "--steps", "2", "--eval-text", "{TEXT}", "--out", "{OUT}"], "'inf'"),
    (["llm", "finetune", "--model", "{SERIES}", "--data", "{TEXT}", "--format", "text", "--lrs", "1e-3", "--steps", "0", "--eval-text", "{TEXT}", "--out", "{OUT}"], "--steps 0"),
    (["llm", "finetune", "--model", "{SERIES}", "--data", "{TEXT}", "--format", "text", "--lrs", "1e-3", "--steps", "1000000000", "--eval-text", "{TEXT}", "--out", "{OUT}"], "--steps 1000000000"),
    (["llm", "finetune", "--model", "{SERIES}", "--data", "{TEXT}", "--format", "text", "--lrs", "1e-3", "--steps", "2", "--reg", "-1", "--eval-text", "{TEXT}", "--out", "{OUT}"], "--reg -1"),
    (["llm", "finetune", "--model", "{SERIES}", "--data", "{TEXT}", "--format", "text", "--lrs", "1e-3", "--steps", "2", "--reg", "inf", "--eval-text", "{TEXT}", "--out", "{OUT}"], "--reg 'inf'"),
    (["llm", "finetune", "--model", "{SERIES}", "--data", "{TEXT}", "--format", "text", "--lrs", "1e-3", "--steps", "2", "--heldout-fraction", "1.5", "--eval-text", "{TEXT}", "--out", "{OUT}"], "--heldout-fraction 1.5"),
    (["llm", "finetune", "--model", "{SERIES}", "--data", "{MISSING}", "--format", "text", "--lrs", "1e-3", "--steps", "2", "--eval-text", "{TEXT}", "--out", "{OUT}"], "does not exist"),
    (["llm", "finetune", "--model", "{SERIES}", "--data", "{BINARY}", "--format", "text", "--lrs", "1e-3", "--steps", "2", "--eval-text", "{TEXT}", "--out", "{OUT}"], "binary.bin"),
    (["llm", "finetune", "--model", "{SERIES}", "--data", "{TEXT}", "--format", "bogus", "--lrs", "1e-3", "--steps", "2", "--eval-text", "{TEXT}", "--out", "{OUT}"], "'bogus'"),
    (["llm", "finetune", "--model", "{SERIES}", "--data", "{TEXT}", "--format", "text", "--lrs", "1e-3", "--steps", "2", "--eval-text", "{BINARY}", "--out", "{OUT}"], "binary.bin"),
    (["llm", "finetune", "--model", "{SERIES}", "--data", "{TEXT}", "--format", "text", "--lrs", "1e-3", "--steps", "2", "--seq-len", "100000", "--eval-text", "{TEXT}", "--out", "{OUT}"], "100000"),
    # multimodal: flags, overrides, the eval file (the positions: tests/experiments/test_llm_multimodal_cli.py)
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--lrs", "0", "--out", "{OUT}"], "--lrs 0 must be > 0"),
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--lrs", "1e-3,nan", "--out", "{OUT}"], "--lrs 'nan' must be a finite number"),
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--steps", "0", "--out", "{OUT}"], "--steps 0 must be >= 1"),
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--stage1-steps", "-1", "--out", "{OUT}"], "--stage1-steps -1 must be >= 0"),
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--stage1-lr", "0", "--out", "{OUT}"], "--stage1-lr 0 must be > 0"),
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--image-tokens", "0", "--out", "{OUT}"], "--image-tokens 0 must be >= 1 and <= 64"),
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--vision-dim", "x", "--out", "{OUT}"], "--vision-dim 'x' is not an integer"),
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--scenes", "0", "--out", "{OUT}"], "--scenes 0 must be >= 1"),
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "lrs=0", "--out", "{OUT}"], "lrs=0 must be > 0"),
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "steps=0", "--out", "{OUT}"], "steps=0 must be >= 1"),
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "stage1_steps=-1", "--out", "{OUT}"], "stage1_steps=-1 must be >= 0"),
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "image_tokens=0", "--out", "{OUT}"], "image_tokens=0 must be >= 1"),
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "bogus=1", "--out", "{OUT}"], "override key 'bogus' is unknown"),
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "warmup_steps=500", "--out", "{OUT}"], "warmup_steps=500 exceeds steps=400"),
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "scenes=100000", "heldout_scenes=100000", "vision_dim=4096", "--out", "{OUT}"], "encoder features; allowed: <= 100,000,000"),
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{BINARY}", "--out", "{OUT}"], "binary.bin"),
    (["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--out", "{FILE}"], "is a file"),
    (["llm", "multimodal", "--preset", "validation", "--quick", "--model", "{MISSING}", "--eval-text", "{TEXT}", "--out", "{OUT}"], "is not an existing folder"),
]

# perturb --backend jax: every perturb case above, and the backend's own.
LLM_JAX = [(argv + ["--backend", "jax"], needle) for argv, needle in LLM if argv[1] == "perturb"] + [
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--gammas", "1", "--seeds", "1", "--backend", "bogus", "--out", "{OUT}"], "'bogus'"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--gammas", "1", "--seeds", "1", "--device", "tpu", "--out", "{OUT}"], "device=tpu runs only with ovt llm perturb --backend jax"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--gammas", "1", "--seeds", "1", "--device", "tpu", "--backend", "jax", "--out", "{OUT}"], "device=tpu: JAX sees no tpu device"),
    (["llm", "perturb", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--gammas", "1", "--seeds", "1", "--noise-device", "param", "--backend", "jax", "--out", "{OUT}"], "noise_device=param is a torch option"),
]

# ovt advise: a probe on the folder series (every flag of a case after these; a repeated flag is read again).
ADVISE_ON = ["advise", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--seq-len", "32", "--out", "{OUT}"]
ADVISE_RUN = ADVISE_ON + ["--lr", "1e-3", "--steps", "10", "--data", "{TEXT}", "--format", "text", "--max-blocks", "4", "--probe-steps", "2"]
ADVISE = [
    (ADVISE_ON + ["--steps", "10", "--data", "{TEXT}", "--format", "text"], "lr is required: give --lr"),
    (ADVISE_ON + ["--lr", "1e-3", "--data", "{TEXT}", "--format", "text"], "steps is required: give --steps"),
    (ADVISE_ON + ["--lr", "1e-3", "--steps", "10"], "data and format are required for the fine-tuning probe"),
    (ADVISE_RUN + ["--lr", "0"], "--lr 0 must be > 0"),
    (ADVISE_RUN + ["--lr", "inf"], "--lr 'inf' must be a finite number"),
    (ADVISE_RUN + ["--steps", "0"], "--steps 0 must be >= 1"),
    (ADVISE_RUN + ["--gammas", "-1"], "--gammas -1 must be >= 0"),
    (ADVISE_RUN + ["--draws", "0"], "--draws 0 must be >= 1"),
    (ADVISE_RUN + ["--probe-budget", "2"], "--probe-budget 2 must be"),
    (ADVISE_RUN + ["--probe-checkpoints", "1"], "--probe-checkpoints 1 must be >= 2"),
    (ADVISE_RUN + ["--probe-steps", "0"], "--probe-steps 0 must be >= 1"),
    (ADVISE_ON + ["--lr", "1e-3", "--steps", "10", "--data", "{TEXT}", "--format", "text", "--probe-budget", "1e-9"], "affords 0 eval block(s) per probe evaluation"),
    (ADVISE_RUN + ["--revisions", "step10-tokens1K"], "advice compares two or more checkpoints past 0 tokens; chosen: step10-tokens1K"),
    (ADVISE_RUN + ["--reference", "{MISSING}"], "is not an existing folder"),
    (ADVISE_RUN + ["--reference", "{EMPTY_DIR}"], "holds no ovt llm perturb store"),
    (ADVISE_RUN + ["--data", "{MISSING}"], "does not exist"),
    (ADVISE_RUN + ["--eval-text", "{BINARY}"], "binary.bin"),
    (ADVISE_RUN + ["--out", "{FILE}"], "is a file"),
    (["advise", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--lr", "1e-3", "--steps", "10"], "the following arguments are required: --out"),
]

# fmt: on

CASES = THEORY + FIGURES + COMPARE + REPRODUCE + LLM + LLM_JAX + ADVISE


def _store(run, manifest, frame=None, raw: bytes | None = None):
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    if raw is not None:
        (run / "metrics.parquet").write_bytes(raw)
    elif frame is not None:
        frame.to_parquet(run / "metrics.parquet", index=False)
    return run


def _rows(values) -> pd.DataFrame:
    n = len(values)
    return store.block(
        source=["theory"] * n,
        setup="x",
        checkpoint=[f"T{i}" for i in range(n)],
        pretrain_time=[float(i + 1) for i in range(n)],
        modification="none",
        seed=0,
        metric="pretrain_loss",
        value=values,
    )


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """The files and run directories the cases name (built once; the cases never change them)."""
    root = tmp_path_factory.mktemp("battery")
    series = root / "series"
    series.mkdir()
    write_folder_series(series, make_tokenizer())
    text = root / "text.txt"
    text.write_text("\n".join(f"the model learns word {i} and then forgets it." for i in range(300)))
    (root / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (root / "file").write_text("x")
    (root / "empty").mkdir()
    (root / "number.jsonl").write_text('{"text": "fine words here"}\n{"text": 7}\n')
    (root / "null.jsonl").write_text('{"text": "fine words here"}\n\n{"text": null}\n')
    (root / "broken.jsonl").write_text('{"text": "fine words here"}\n{"text": "unterminated\n')
    os.mkfifo(root / "fifo")
    (root / "broken_study").mkdir()
    (root / "broken_study" / "study.json").write_text("{study: ")
    (root / "null_study").mkdir()
    (root / "null_study" / "study.json").write_text("null")
    gaussian = {"preset": "gaussian", "source": "theory", "status": "complete"}
    return {
        "SERIES": series,
        "TEXT": text,
        "BINARY": root / "binary.bin",
        "FILE": root / "file",
        "EMPTY_DIR": root / "empty",
        "NUMBER_JSONL": root / "number.jsonl",
        "NULL_JSONL": root / "null.jsonl",
        "BROKEN_JSONL": root / "broken.jsonl",
        "FIFO": root / "fifo",
        "BROKEN_STUDY": root / "broken_study",
        "NULL_STUDY": root / "null_study",
        "MISSING": root / "missing",
        "BAD_JSON_RUN": _store(root / "bad_json", "{preset: gaussian", _rows([1.0, 2.0])),
        "LIST_JSON_RUN": _store(root / "list_json", "[1, 2]", _rows([1.0, 2.0])),
        "COMPLETE_OTHER_RUN": _store(
            root / "other", {"preset": "gaussian", "config": {}, "status": "complete"}, _rows([1.0])
        ),
        "MISSING_COLUMNS_RUN": _store(root / "columns", gaussian, pd.DataFrame({"value": [1.0]})),
        "ZERO_ROW_RUN": _store(root / "zero", gaussian, _rows([])),
        "ALL_NAN_RUN": _store(root / "nan", gaussian, _rows([math.nan] * 3)),
        "PRETRAIN_RUN": _store(root / "pretrain", {"command": "llm pretrain", "source": "llm"}, _rows([1.0, 2.0])),
        "NOT_PARQUET_RUN": _store(root / "not_parquet", gaussian, raw=b"not a parquet file"),
    }


def _snapshot(path):
    """Every file under ``path`` with its bytes (None: the path does not exist)."""
    if not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return {p.relative_to(path).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize("argv, needle", CASES, ids=[" ".join(a)[:80] for a, _ in CASES])
def test_bad_input_meets_the_contract(argv, needle, places, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    names = {**{k: str(v) for k, v in places.items()}, "OUT": str(out)}
    argv = [a.format(**names) for a in argv]
    touched = [out] + [places[k] for k in places if any(f"{{{k}}}" in a for a in argv)]
    before = [_snapshot(p) for p in touched]
    if argv[0] == "theory" and "--out" not in argv and "--list" not in argv and len(argv) > 1:
        argv += ["--out", str(out)]
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.count("\n") == 1 and captured.err.startswith("ovt: error: "), captured.err
    assert "Traceback" not in captured.err
    assert needle in captured.err, captured.err
    assert [_snapshot(p) for p in touched] == before, "bad input wrote something"


def test_the_battery_is_large_enough():
    assert len(CASES) >= 60
    commands = {"theory", "figures", "compare", "reproduce", "llm", "advise", "frobnicate"}
    assert {argv[0] for argv, _ in CASES} == commands
    assert {argv[1] for argv, _ in LLM} >= {"revisions", "pretrain", "perturb", "finetune", "quantize", "multimodal"}


# Environment variables are input too: (variables, argv, needle).
ENVIRONMENT = [
    ({"OVT_WORKERS": value}, argv, f"OVT_WORKERS='{value}' must be a whole number >= 1")
    for value in ("abc", "0", "-3")
    for argv in (
        ["llm", "pretrain", "--preset", "tiny", "--budgets", "1K", "--out", "{OUT}"],
        [
            "llm",
            "perturb",
            "--model",
            "{SERIES}",
            "--eval-text",
            "{TEXT}",
            "--gammas",
            "1",
            "--seeds",
            "1",
            "--out",
            "{OUT}",
        ],
        ["llm", "quantize", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--bits", "8", "--out", "{OUT}"],
        ["llm", "multimodal", "--model", "{SERIES}", "--eval-text", "{TEXT}", "--out", "{OUT}"],
        ["llm", "study", "study-quick", "--out", "{OUT}"],
    )
]


@pytest.mark.parametrize("variables, argv, needle", ENVIRONMENT, ids=[f"{v} {a[1]}" for v, a, _ in ENVIRONMENT])
def test_bad_environment_meets_the_contract(variables, argv, needle, places, tmp_path, capsys, monkeypatch):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    argv = [a.format(**{**{k: str(v) for k, v in places.items()}, "OUT": str(out)}) for a in argv]
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1 and needle in captured.err, captured.err
    assert not out.exists(), "bad input wrote something"

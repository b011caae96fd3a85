"""Checkpoint suites: the public series a user can run the protocol on, and what each family needs.

A *family* is one training codebase's way of naming checkpoints and initialising weights; a *suite*
is one hub repository of it. Per family the registry states

- the revision names (``revisions.parse_revision`` reads them; names are listed from the hub,
  never built, because the published sets have gaps and two repos of one model round differently);
- tokens per optimiser step, where the names carry no token count: tokens = step * tokens_per_step;
- the transformers class its ``config.json`` loads as (``checkpoints.load_checkpoint`` checks it);
- the perturbation's ``init`` scale per tensor, sigma_p = the std the family's published init
  scheme gives tensor p (``perturb.noise_scales``; recorded per tensor in the run manifest):

      pythia  (GPT-NeoX small_init / wang_init, d = hidden size, L = layers):
              query_key_value, dense_h_to_4h, embed_in, embed_out:  sqrt(2 / (5 d))
              (transformers 5 loads embed_out as lm_head)
              attention.dense, dense_4h_to_h:                        2 / (L sqrt(d))
      olmo2   every Linear and Embedding weight:                    0.02
      smollm2 (nanotron StandardParametrizator, s = the init std, config.initializer_range):
              q/k/v_proj, gate/up_proj, embed_tokens (= lm_head):   s
              o_proj, down_proj:                                    s / sqrt(2 L)
      amber, olmo1, llama: every Linear and Embedding weight:       config.initializer_range

  In every family biases start at 0 and norm weights at 1 (zero init variance), so they are never
  perturbed; a tied output layer is the embedding tensor and is perturbed once;
- evaluation defaults (sequence length, dtype, device) for a first run.

Which facts were checked against a public source and which are assumed is said per family
(``Family.verified``); the README's "Checkpoint suites" table is this registry. This module imports
neither torch nor transformers: families are matched on ``config.model_type`` and the hub id.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable

PYTHIA_TOKENS_PER_STEP = 1024 * 2048  # batch 1024 sequences x 2048 tokens = 2,097,152
OLMO2_1B_TOKENS_PER_STEP = 512 * 4096  # 2,097,152: stage1-step1907359-tokens4001B
SMOLLM2_TOKENS_PER_STEP = {"135M": 1_048_576, "360M": 1_572_864, "1.7B": 2_097_152}  # the cards' GBS


@dataclasses.dataclass(frozen=True)
class TensorInit:
    """One row of a family's init scheme: perturbed weights whose name matches ``pattern`` (searched)
    start as N(0, std(config)^2); ``label`` names the formula in the manifest."""

    pattern: str
    label: str
    std: Callable[[object], float]


@dataclasses.dataclass(frozen=True)
class EvalDefaults:
    seq_len: int
    batch_size: int
    dtype: str
    device: str


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    model_type: str  # config.model_type
    model_class: str  # what AutoModelForCausalLM builds from its config.json
    revision_forms: str
    scheme: str  # the published init scheme and where it is stated
    init: tuple[TensorInit, ...]  # first match wins
    eval_defaults: EvalDefaults
    verified: str


def _hidden(config) -> int:
    return int(config.hidden_size)


def _layers(config) -> int:
    return int(config.num_hidden_layers)


def _initializer_range(config) -> float:
    std = getattr(config, "initializer_range", None)
    if std is None:
        raise ValueError("scale='init' needs model.config.initializer_range (the declared init std)")
    return float(std)


def small_init(config) -> float:
    """GPT-NeoX ``small_init`` (Nguyen & Salazar 2019): sqrt(2 / (5 d))."""
    return math.sqrt(2 / (5 * _hidden(config)))


def wang_init(config) -> float:
    """GPT-NeoX ``wang_init`` for the layers that write into the residual stream: 2 / (L sqrt(d))."""
    return 2 / (_layers(config) * math.sqrt(_hidden(config)))


def nanotron_row_init(config) -> float:
    """nanotron's row-parallel (output) projections: s / sqrt(2 L), s = the init std."""
    return _initializer_range(config) / math.sqrt(2 * _layers(config))


_ANY_WEIGHT = (TensorInit(r"(^|\.)weight$", "initializer_range", _initializer_range),)

OLMO1 = Family(
    name="olmo1",
    model_type="olmo",
    model_class="OlmoForCausalLM",
    revision_forms="step{N}-tokens{M}B",
    scheme="every Linear and Embedding weight N(0, initializer_range^2), the transformers declared init "
    "(the rule this project has always used for OLMo-1; layer norms carry no parameters)",
    init=_ANY_WEIGHT,
    eval_defaults=EvalDefaults(2048, 8, "bfloat16", "cuda"),
    verified="names and 4,194,304 tokens/step from the OLMo-1B-hf card and revisions (see docs/LLM.md)",
)
PYTHIA = Family(
    name="pythia",
    model_type="gpt_neox",
    model_class="GPTNeoXForCausalLM",
    revision_forms="step{N} (step0, step1, 2, 4, ..., 512, then step1000 ... step143000: 154 in all)",
    scheme="GPT-NeoX init_method small_init, output_layer_init_method wang_init (the pythia-*.yml configs, "
    "megatron/model/init_functions.py)",
    init=(
        TensorInit(r"(attention\.dense|mlp\.dense_4h_to_h)\.weight$", "wang_init 2/(L sqrt(d))", wang_init),
        TensorInit(
            r"(attention\.query_key_value|mlp\.dense_h_to_4h|embed_in|embed_out|lm_head)\.weight$",
            "small_init sqrt(2/(5d))",
            small_init,
        ),
    ),
    eval_defaults=EvalDefaults(2048, 8, "float32", "cpu"),
    verified="verified: step{N} names, 2,097,152 tokens/step and the small_init/wang_init assignment "
    "(a public write-up of the pythia-70m.yml init); parameter counts computed from the configs match "
    "the Pythia README; the full branch list is read from the hub",
)
OLMO2 = Family(
    name="olmo2",
    model_type="olmo2",
    model_class="Olmo2ForCausalLM",
    revision_forms="stage1-step{N}-tokens{M}B (stage 1, the curve), stage2-ingredient{K}-step{N}-tokens{M}B; "
    "early OLMo-2-7B branches without the stage1- prefix count as stage 1",
    scheme="every parameter N(0, 0.02^2) (OLMo 2 paper, 'initialization'); RMSNorm and QK-norm weights 1",
    init=(TensorInit(r"\.weight$", "0.02", lambda config: 0.02),),
    eval_defaults=EvalDefaults(4096, 4, "bfloat16", "cuda"),
    verified="verified: stage1-step140000-tokens294B, stage1-step10000-tokens21B, final "
    "stage1-step1907359-tokens4001B and stage2-ingredient{1,2,3}-step23852-tokens51B of OLMo-2-0425-1B "
    "(transformers docs, public code); init std 0.02 from the paper",
)
SMOLLM2 = Family(
    name="smollm2",
    model_type="llama",
    model_class="LlamaForCausalLM",
    revision_forms="step-{N} (every 240,000 steps for 135M: step-240000, step-480000, ...)",
    scheme="nanotron StandardParametrizator: column linears and the (tied) embedding N(0, s^2), row linears "
    "(o_proj, down_proj) N(0, s^2 / (2L)), s = init_method.std = config.initializer_range",
    init=(
        TensorInit(r"(o_proj|down_proj)\.weight$", "s/sqrt(2L)", nanotron_row_init),
        TensorInit(r"\.weight$", "s = initializer_range", _initializer_range),
    ),
    eval_defaults=EvalDefaults(2048, 8, "float32", "cpu"),
    verified="verified: step-{N} naming, 240,000-step spacing and 1,048,576 tokens/step (135M card), "
    "nanotron's StandardParametrizator; assumed: s = 1/24 (0.041666..., the 135M config's "
    "initializer_range) is the training init std, and the 360M GBS 1,572,864",
)
AMBER = Family(
    name="amber",
    model_type="llama",
    model_class="LlamaForCausalLM",
    revision_forms="ckpt_000 ... ckpt_359 (no token count: ckpt_i is (i + 1) x 3.5B tokens, approximate)",
    scheme="assumed: every Linear and Embedding weight N(0, initializer_range^2) = 0.02 (the card does not "
    "state the training init; this is the config's declared init)",
    init=_ANY_WEIGHT,
    eval_defaults=EvalDefaults(2048, 4, "bfloat16", "cuda"),
    verified="verified: ckpt_000 ... ckpt_359 and LlamaForCausalLM (the Amber card); assumed: the init "
    "and the even 3.5B-token spacing",
)
LLAMA = Family(
    name="llama",
    model_type="llama",
    model_class="LlamaForCausalLM",
    revision_forms="any of the forms above",
    scheme="a Llama checkpoint of no listed suite: every Linear and Embedding weight N(0, "
    "initializer_range^2), the transformers declared init",
    init=_ANY_WEIGHT,
    eval_defaults=EvalDefaults(2048, 8, "float32", "cpu"),
    verified="a fallback, not a published scheme",
)
FAMILIES: dict[str, Family] = {f.name: f for f in (OLMO1, PYTHIA, OLMO2, SMOLLM2, AMBER, LLAMA)}
BY_MODEL_TYPE = {"olmo": OLMO1, "gpt_neox": PYTHIA, "olmo2": OLMO2, "llama": LLAMA}


@dataclasses.dataclass(frozen=True)
class Suite:
    """One public checkpoint series.

    ``parameters``: unique parameters (a tied embedding once) of the model its config builds;
    ``checkpoints``/``first``/``last``: the published set as the card states it (the hub listing is
    what runs read); ``stage``: the stage whose revisions form the pre-training curve; ``init_std``:
    the config's ``initializer_range``; ``laptop``: what a 2-core laptop can do with it.
    """

    repo: str
    family: str
    tokens_per_step: int | None
    parameters: int
    checkpoints: int | None  # None: the card states no count
    first: str | None  # None: not stated; the hub listing has it
    last: str | None
    init_std: float
    laptop: str
    stage: str | None = None


def _pythia(size: str, parameters: int, laptop: str) -> Suite:
    return Suite(
        repo=f"EleutherAI/pythia-{size}",
        family="pythia",
        tokens_per_step=PYTHIA_TOKENS_PER_STEP,
        parameters=parameters,
        checkpoints=154,
        first="step0",
        last="step143000",
        init_std=0.02,
        laptop=laptop,
    )


SUITES: dict[str, Suite] = {
    s.repo: s
    for s in (
        _pythia("14m", 14_067_712, "perturb and fine-tune"),
        _pythia("31m", 30_494_720, "perturb and fine-tune"),
        _pythia("70m", 70_426_624, "perturb and fine-tune (the laptop recipe)"),
        _pythia("160m", 162_322_944, "perturb; fine-tune slowly"),
        Suite(
            repo="allenai/OLMo-1B-hf",
            family="olmo1",
            tokens_per_step=2048 * 2048,
            parameters=1_176_764_416,
            checkpoints=None,
            first="step20000-tokens84B",
            last="step738020-tokens3094B",
            init_std=0.02,
            laptop="no: GPU (the GPU recipe)",
        ),
        Suite(
            repo="allenai/OLMo-1B-0724-hf",
            family="olmo1",
            tokens_per_step=4096 * 1024,
            parameters=1_176_764_416,
            checkpoints=None,
            first="step1000-tokens4B",
            last=None,
            init_std=0.02,
            laptop="no: GPU",
        ),
        Suite(
            repo="allenai/OLMo-2-0425-1B",
            family="olmo2",
            tokens_per_step=OLMO2_1B_TOKENS_PER_STEP,
            parameters=1_484_916_736,
            checkpoints=None,
            first=None,
            last="stage1-step1907359-tokens4001B",
            init_std=0.02,
            laptop="perturb a few checkpoints in float32 (6 GB of weights); GPU advised",
            stage="stage1",
        ),
        Suite(
            repo="allenai/OLMo-2-1124-7B",
            family="olmo2",
            tokens_per_step=4096 * 1024,
            parameters=7_298_617_344,
            checkpoints=None,
            first=None,
            last="stage1-step928646-tokens3896B",
            init_std=0.02,
            laptop="no: GPU",
            stage="stage1",
        ),
        Suite(
            repo="HuggingFaceTB/SmolLM2-135M-intermediate-checkpoints",
            family="smollm2",
            tokens_per_step=SMOLLM2_TOKENS_PER_STEP["135M"],
            parameters=134_515_008,
            checkpoints=None,
            first="step-240000",
            last=None,
            init_std=1 / 24,
            laptop="perturb and fine-tune",
        ),
        Suite(
            repo="LLM360/Amber",
            family="amber",
            tokens_per_step=None,
            parameters=6_738_415_616,
            checkpoints=360,
            first="ckpt_000",
            last="ckpt_359",
            init_std=0.02,
            laptop="no: GPU",
        ),
    )
}


def family_of(config, name_or_path: str | None = None) -> Family | None:
    """The family of a loaded model: its suite's (by hub id), else by ``config.model_type``; None for
    a model of no known type (the perturbation then uses the OLMo-1 rule, as it always did)."""
    suite = SUITES.get(str(name_or_path)) if name_or_path else None
    if suite is not None:
        return FAMILIES[suite.family]
    return BY_MODEL_TYPE.get(getattr(config, "model_type", None))


def tensor_init(family: Family, name: str) -> TensorInit:
    """The init row that covers weight ``name``; ValueError when none does (a rule that does not know
    a tensor must not guess its scale)."""
    for row in family.init:
        if re.search(row.pattern, name):
            return row
    patterns = ", ".join(row.pattern for row in family.init)
    raise ValueError(f"tensor {name!r} is not covered by the {family.name} init rule; allowed patterns: {patterns}")


def perturbation_record(family: Family, names: list[str], scale: str) -> dict:
    """What a run manifest records about sigma: the family, its init scheme, and per perturbed tensor
    the formula that gave its sigma (``scale='init'``) or the scale mode. Either backend calls it with
    the names of the tensors it perturbs."""
    if scale == "init":
        by_tensor = {name: tensor_init(family, name).label for name in names}
    else:
        by_tensor = dict.fromkeys(names, "tensor RMS" if scale == "relative" else "1")
    return {
        "family": family.name,
        "init_scheme": family.scheme,
        "rule_by_parameter": by_tensor,
        "policy": "Linear and Embedding weights perturbed (a tied embedding once, under its first name; an "
        "untied output layer on its own); norm weights and biases unchanged (zero init variance)",
    }


def tokens_per_step(model: str | None, form: str) -> int:
    """Tokens per step for revision names that carry none: the suite's, or (the model unknown, e.g.
    a requested name checked on its own) the family's first size: Pythia's 2,097,152 for ``step{N}``,
    SmolLM2-135M's 1,048,576 for ``step-{N}``."""
    suite = SUITES.get(str(model)) if model is not None else None
    if suite is not None and suite.tokens_per_step is not None:
        return suite.tokens_per_step
    return PYTHIA_TOKENS_PER_STEP if form == "step" else SMOLLM2_TOKENS_PER_STEP["135M"]


def stage_of(model: str | None) -> str | None:
    """The stage an unprefixed ``step{N}-tokens{M}B`` name belongs to: stage 1 in an OLMo-2 suite."""
    suite = SUITES.get(str(model)) if model is not None else None
    return "stage1" if suite is not None and suite.family == "olmo2" else None

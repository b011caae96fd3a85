"""Checkpoint suites beyond OLMo-1B: offline hub caches of tiny random models of each family's real
architecture class, under the real repo ids and revision names; listing and parsing, loading, the
per-tensor init scales, loud failures, and ``ovt llm perturb`` on every family.

Revision names: Pythia ``step{N}`` and SmolLM2 ``step-{N}`` follow the model cards; the OLMo-2-0425-1B
names below are ones the transformers docs and public code load; ``ckpt_NNN`` is Amber's card.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPTNeoXConfig, LlamaConfig, Olmo2Config

from llm_validation import suites
from llm_validation.checkpoints import CheckpointError, list_revisions, load_checkpoint
from llm_validation.models import olmo_config
from llm_validation.perturb import gaussian_noise, noise_scales, perturbation_rule, perturbed
from llm_validation.revisions import parse_revision

from .conftest import tiny_corpus, use_offline_cache, write_hub_cache

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PYTHIA = "EleutherAI/pythia-70m"
OLMO2 = "allenai/OLMo-2-0425-1B"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-intermediate-checkpoints"
AMBER = "LLM360/Amber"
OLMO1 = "allenai/OLMo-1B-hf"
# Real revision names of each suite (a few of each), as the hub lists them.
REVISIONS = {
    PYTHIA: ("step0", "step512", "step1000", "step143000"),
    OLMO2: (
        "stage1-step10000-tokens21B",
        "stage1-step140000-tokens294B",
        "stage1-step1907359-tokens4001B",
        "stage2-ingredient1-step23852-tokens51B",
    ),
    SMOLLM2: ("step-240000", "step-480000", "step-720000"),
    AMBER: ("ckpt_000", "ckpt_179", "ckpt_359"),
    OLMO1: ("step20000-tokens84B", "step738020-tokens3094B"),
}
FAMILY = {PYTHIA: "pythia", OLMO2: "olmo2", SMOLLM2: "smollm2", AMBER: "amber", OLMO1: "olmo1"}
CLASS = {
    PYTHIA: "GPTNeoXForCausalLM",
    OLMO2: "Olmo2ForCausalLM",
    SMOLLM2: "LlamaForCausalLM",
    AMBER: "LlamaForCausalLM",
    OLMO1: "OlmoForCausalLM",
}
D, L = 32, 2  # hidden size and layers of every tiny model


def tiny_config(repo: str, vocab_size: int):
    """The family's architecture at test size: untied output for Pythia, OLMo-2 and Amber, tied for
    SmolLM2 and OLMo-1; SmolLM2's init std 1/24 as its 135M config states."""
    shape = dict(hidden_size=D, num_hidden_layers=L, num_attention_heads=4, intermediate_size=64, vocab_size=vocab_size)
    ids = dict(pad_token_id=None, bos_token_id=None, eos_token_id=0, max_position_embeddings=128)
    if repo == PYTHIA:
        return GPTNeoXConfig(**shape, **ids, rotary_pct=0.25, tie_word_embeddings=False)
    if repo == OLMO2:
        return Olmo2Config(**shape, **ids, tie_word_embeddings=False)
    if repo == SMOLLM2:
        return LlamaConfig(**shape, **ids, num_key_value_heads=2, tie_word_embeddings=True, initializer_range=1 / 24)
    if repo == AMBER:
        return LlamaConfig(**shape, **ids, tie_word_embeddings=False, initializer_range=0.02)
    return olmo_config("tiny", vocab_size=vocab_size)


def tiny_model(repo: str, vocab_size: int, seed: int):
    from transformers import AutoModelForCausalLM

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(tiny_config(repo, vocab_size))
    finally:
        torch.random.set_rng_state(state)
    return model.eval()


def write_suite(root: Path, cache: Path, repo: str, tokenizer, revisions=None) -> dict[str, int]:
    """Each revision its own random weights (seed = index + 1) as ``save_pretrained`` folders under
    ``root``, laid out in ``cache`` as the hub does (plus a ``main`` ref); returns {revision: seed}."""
    seeds, folders = {}, {}
    for index, name in enumerate(revisions or REVISIONS[repo]):
        seeds[name] = index + 1
        folder = root / repo.replace("/", "--") / name
        tiny_model(repo, len(tokenizer), seeds[name]).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[name] = folder
    write_hub_cache(cache, repo, folders | {"main": folders[name]})
    return seeds


@pytest.fixture(scope="session")
def suite_hub(tmp_path_factory, tokenizer) -> tuple[Path, dict[str, dict[str, int]]]:
    """(HF home, {repo: {revision: seed}}) of one offline hub cache holding every suite; read-only."""
    home = tmp_path_factory.mktemp("suites")
    (home / "hub").mkdir()
    seeds = {repo: write_suite(home / "src", home / "hub", repo, tokenizer) for repo in REVISIONS}
    return home, seeds


@pytest.fixture
def suite_cache(monkeypatch, suite_hub) -> dict[str, dict[str, int]]:
    """The suites' cache as the (offline) hub; returns {repo: {revision: seed}}."""
    home, seeds = suite_hub
    use_offline_cache(monkeypatch, home)
    return seeds


# --- revision names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, model, step, tokens, stage",
    [
        ("step0", PYTHIA, 0, 0, None),
        ("step143000", PYTHIA, 143000, 143000 * 2_097_152, None),  # ~300B, the Pythia card's total
        ("step1000", "EleutherAI/pythia-14m", 1000, 1000 * 2_097_152, None),
        ("step-240000", SMOLLM2, 240000, 240000 * 1_048_576, None),  # ~250B, the card's spacing
        ("stage1-step1907359-tokens4001B", OLMO2, 1907359, 4001 * 10**9, "stage1"),
        ("stage2-ingredient1-step23852-tokens51B", OLMO2, 23852, 51 * 10**9, "stage2-ingredient1"),
        ("step1000-tokens5B", "allenai/OLMo-2-1124-7B", 1000, 5 * 10**9, "stage1"),  # no prefix: stage 1
        ("step1000-tokens5B", OLMO1, 1000, 5 * 10**9, None),
        ("ckpt_359", AMBER, 359, 1_260 * 10**9, None),
    ],
)
def test_real_names_parse_with_the_suites_tokens(name, model, step, tokens, stage):
    revision = parse_revision(name, model)
    assert (revision.step, revision.tokens, revision.stage) == (step, tokens, stage)


def test_tokens_per_step_agree_with_the_names_that_state_tokens():
    """OLMo-2-0425-1B states tokens in its names: the registry's 2,097,152 tokens/step reproduces them."""
    for name in REVISIONS[OLMO2][:3]:
        revision = parse_revision(name, OLMO2)
        assert revision.step * suites.SUITES[OLMO2].tokens_per_step == pytest.approx(revision.tokens, rel=2e-3)


def test_registry_sizes_are_the_configs_parameter_counts():
    """Pythia-70m as its config.json states it, counted on the meta device: the registry's (and the
    Pythia README's) 70,426,624."""
    from transformers import AutoModelForCausalLM

    config = GPTNeoXConfig(
        hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048, vocab_size=50304
    )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == suites.SUITES[PYTHIA].parameters
    assert config.tie_word_embeddings is False and config.use_parallel_residual


@pytest.mark.parametrize("repo", list(REVISIONS))
def test_offline_cache_lists_and_loads_every_family(suite_cache, tokenizer, repo):
    revisions = list_revisions(repo)
    stage_order = sorted(
        REVISIONS[repo], key=lambda n: (parse_revision(n, repo).stage or "", parse_revision(n, repo).tokens)
    )
    assert [r.name for r in revisions] == stage_order  # `main` left out
    assert revisions == [parse_revision(n, repo) for n in stage_order]
    name = REVISIONS[repo][-1]
    model, loaded_tokenizer = load_checkpoint(repo, name)
    assert type(model).__name__ == CLASS[repo] and model.name_or_path == repo
    expected = tiny_model(repo, len(tokenizer), suite_cache[repo][name])
    for (key, p), (_, q) in zip(model.state_dict().items(), expected.state_dict().items(), strict=True):
        assert torch.equal(p, q), key
    text = tiny_corpus(1)[0]
    assert loaded_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]


# --- the per-tensor init scales ---------------------------------------------------------------

SMALL, WANG = math.sqrt(2 / (5 * D)), 2 / (L * math.sqrt(D))  # GPT-NeoX, by hand


def expected_sigma(repo: str, name: str) -> float:
    """sigma_p as docs/LLM.md states each family's rule, written out independently of ``suites``."""
    if repo == PYTHIA:
        return WANG if name.endswith(("attention.dense.weight", "dense_4h_to_h.weight")) else SMALL
    if repo == SMOLLM2:
        return (1 / 24) / math.sqrt(2 * L) if name.endswith(("o_proj.weight", "down_proj.weight")) else 1 / 24
    return 0.02


@pytest.mark.parametrize("repo", list(REVISIONS))
def test_init_scale_is_the_familys_published_std_per_tensor(suite_cache, repo):
    model, _ = load_checkpoint(repo, REVISIONS[repo][0])
    sigmas = noise_scales(model, "init")
    assert sigmas == {name: pytest.approx(expected_sigma(repo, name), rel=1e-12) for name in sigmas}
    untied = {PYTHIA: "lm_head.weight", OLMO2: "lm_head.weight", AMBER: "lm_head.weight"}
    if repo in untied:  # an untied output layer is its own tensor with its own sigma
        assert untied[repo] in sigmas
    else:  # tied: perturbed once, as the embedding
        assert "lm_head.weight" not in sigmas and model.lm_head.weight is model.get_input_embeddings().weight
    assert not any(name.endswith("bias") or "norm" in name for name in sigmas)
    # A draw adds exactly gamma * sigma_p * eps_p to each tensor, and nothing to biases or norms.
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with perturbed(model, 0.5, seed=3):
        after = {k: v.clone() for k, v in model.state_dict().items()}
    for key in before:
        if key in sigmas:
            noise = 0.5 * sigmas[key] * gaussian_noise(3, key, before[key].shape)
            torch.testing.assert_close(after[key] - before[key], noise, rtol=0, atol=1e-6)
        elif key not in ("lm_head.weight",):  # a tied lm_head moves with the embedding
            assert torch.equal(after[key], before[key]), key
    rule = perturbation_rule(model, "init")
    assert rule["family"] == FAMILY[repo] and set(rule["rule_by_parameter"]) == set(sigmas)


def test_olmo1_rule_unchanged_and_a_tensor_outside_a_rule_is_refused(suite_cache):
    model, _ = load_checkpoint(OLMO1, REVISIONS[OLMO1][0])
    assert set(noise_scales(model, "init").values()) == {model.config.initializer_range}
    with pytest.raises(ValueError, match="'gpt_neox.layers.0.attention.rotary.weight' is not covered by the pythia"):
        suites.tensor_init(suites.PYTHIA, "gpt_neox.layers.0.attention.rotary.weight")


# --- loud failures ----------------------------------------------------------------------------


def damaged_hub(monkeypatch, tmp_path, suite_hub, repo: str, damage) -> str:
    """A cache holding one revision of ``repo`` whose weights file ``damage`` edits."""
    home, _ = suite_hub
    name = REVISIONS[repo][0]
    folder = tmp_path / "src" / name
    shutil.copytree(home / "src" / repo.replace("/", "--") / name, folder)
    tensors = load_file(folder / "model.safetensors")
    damage(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    write_hub_cache(use_offline_cache(monkeypatch, tmp_path / "hf"), repo, {name: folder})
    return name


OUTPUT = {PYTHIA: "embed_out.weight", OLMO2: "lm_head.weight", AMBER: "lm_head.weight"}


@pytest.mark.parametrize("repo", [PYTHIA, OLMO2, SMOLLM2, AMBER])
def test_a_missing_weight_fails_loudly(monkeypatch, tmp_path, suite_hub, repo):
    victim = OUTPUT.get(repo, "model.layers.1.mlp.down_proj.weight")
    name = damaged_hub(monkeypatch, tmp_path, suite_hub, repo, lambda t: t.pop(victim))
    named = "lm_head.weight" if repo == PYTHIA else victim  # Pythia's file says embed_out, the model lm_head
    with pytest.raises(CheckpointError, match=f"incomplete.*{named}"):
        load_checkpoint(repo, name)


def test_a_tied_checkpoint_loaded_untied_fails_loudly(monkeypatch, tmp_path, suite_hub):
    """SmolLM2 stores no lm_head: a config that unties it would re-initialise the output layer."""
    name = damaged_hub(monkeypatch, tmp_path, suite_hub, SMOLLM2, lambda t: None)
    config = next((tmp_path / "hf" / "hub").glob("models--*/snapshots/*/config.json"))
    config.write_text(json.dumps(json.loads(config.read_text()) | {"tie_word_embeddings": False}))
    with pytest.raises(CheckpointError, match="incomplete.*lm_head.weight"):
        load_checkpoint(SMOLLM2, name)


def test_an_unused_weight_or_another_architecture_fails_loudly(monkeypatch, tmp_path, suite_hub, tokenizer):
    name = damaged_hub(monkeypatch, tmp_path, suite_hub, PYTHIA, lambda t: t.update(extra=torch.zeros(2)))
    with pytest.raises(CheckpointError, match="does not use.*extra"):
        load_checkpoint(PYTHIA, name)
    # A Llama checkpoint published under the Pythia id loads, but as the wrong class.
    cache = use_offline_cache(monkeypatch, tmp_path / "other")
    write_suite(tmp_path / "src2", cache, AMBER, tokenizer, revisions=("step1000",))
    shutil.move(cache / f"models--{AMBER.replace('/', '--')}", cache / f"models--{PYTHIA.replace('/', '--')}")
    with pytest.raises(CheckpointError, match="loads as LlamaForCausalLM; the pythia suite is GPTNeoXForCausalLM"):
        load_checkpoint(PYTHIA, "step1000")


# --- ovt llm perturb on every family ----------------------------------------------------------


@pytest.mark.parametrize("repo", [PYTHIA, OLMO2, SMOLLM2, AMBER])
def test_perturb_runs_on_every_family_and_records_the_rule(suite_cache, tmp_path, repo):
    import pandas as pd

    from experiments import cli
    from rundir import store

    eval_text = tmp_path / "eval.txt"
    eval_text.write_text("\n".join(tiny_corpus(30, seed=4)))
    first, last = REVISIONS[repo][0], REVISIONS[repo][1]
    argv = ["llm", "perturb", "--model", repo, "--revisions", f"{first},{last}", "--eval-text", eval_text]
    argv += ["--gammas", "1", "--seeds", "1", "--seq-len", "32", "--max-blocks", "2", "--batch-size", "2"]
    assert cli.main([str(a) for a in [*argv, "--threads", "1", "--quiet", "--out", tmp_path / "run"]]) == 0
    table = pd.read_parquet(tmp_path / "run" / store.METRICS)
    rows = table[table.checkpoint != "inflection"]
    assert sorted(set(rows.checkpoint)) == sorted({first, last}) and len(rows) == 2 * 2
    assert set(rows.pretrain_time) == {float(parse_revision(n, repo).tokens) for n in (first, last)}
    sigma = store.read_manifest(tmp_path / "run")["sigma"]
    assert sigma["family"] == FAMILY[repo] and sigma["init_scheme"] == suites.FAMILIES[FAMILY[repo]].scheme
    assert sigma["by_parameter"] == {
        n: pytest.approx(expected_sigma(repo, n), rel=1e-12) for n in sigma["by_parameter"]
    }
    assert set(sigma["rule_by_parameter"]) == set(sigma["by_parameter"])
    if repo == PYTHIA:
        assert sigma["rule_by_parameter"]["gpt_neox.layers.1.attention.dense.weight"] == "wang_init 2/(L sqrt(d))"

import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from llm_validation.checkpoints import SERIES, CheckpointError, list_revisions, load_checkpoint, nearest_revisions
from llm_validation.revisions import AMBER_CHECKPOINTS, Revision, format_revision, parse_revision

from .conftest import HUB_REPO, SERIES_POINTS, make_model, tiny_corpus, use_offline_cache


@pytest.mark.parametrize(
    "name, step, tokens, stage",
    [
        ("step738020-tokens3094B", 738020, 3094 * 10**9, None),  # OLMo-1B-hf, final
        ("step1000-tokens4B", 1000, 4 * 10**9, None),  # OLMo-1B-0724-hf
        ("step1200-tokens5M", 1200, 5 * 10**6, None),  # local series
        ("step10-tokens1K", 10, 1000, None),
        ("step3-tokens999", 3, 999, None),
        ("step5-tokens2T", 5, 2 * 10**12, None),
        ("stage1-step928646-tokens3896B", 928646, 3896 * 10**9, "stage1"),  # OLMo-2-1124-7B
        ("stage2-ingredient2-step11931-tokens50B", 11931, 50 * 10**9, "stage2-ingredient2"),
        ("ckpt_000", 0, 3_500_000_000, None),  # Amber
        ("ckpt_359", 359, 1_260_000_000_000, None),
    ],
)
def test_parse_revision_every_family(name, step, tokens, stage):
    assert parse_revision(name) == Revision(name, step, tokens, stage)


def test_amber_tokens_linear_in_index():
    tokens = [parse_revision(f"ckpt_{i:03d}").tokens for i in range(AMBER_CHECKPOINTS)]
    assert len(set(b - a for a, b in zip(tokens, tokens[1:]))) == 1


@pytest.mark.parametrize(
    "step, tokens, name",
    [
        (1200, 5_000_000, "step1200-tokens5M"),
        (738020, 3_094_000_000_000, "step738020-tokens3094B"),
        (5, 1_900_000, "step5-tokens1900K"),
        (9, 1_234_567, "step9-tokens1234K"),
        (7, 999, "step7-tokens999"),
        (0, 0, "step0-tokens0"),
        (10, 1_999, "step10-tokens1999"),
    ],
)
def test_format_revision_picks_the_largest_exact_unit(step, tokens, name):
    assert format_revision(step, tokens) == name


@pytest.mark.parametrize("tokens", [0, 5, 999, 1000, 1280, 99_999, 5_000_000, 3_094 * 10**9, 12 * 10**12])
def test_format_parse_round_trip_exact_counts(tokens):
    revision = parse_revision(format_revision(42, tokens))
    assert (revision.step, revision.tokens) == (42, tokens)
    assert format_revision(revision.step, revision.tokens) == revision.name


@pytest.mark.parametrize("tokens", [999_999, 1_234_567, 5_242_880, 84 * 10**9 + 7])
def test_format_rounds_down_to_three_digits_when_no_unit_divides(tokens):
    revision = parse_revision(format_revision(1, tokens))
    assert revision.tokens <= tokens and (tokens - revision.tokens) / tokens < 1e-2


@pytest.mark.parametrize(
    "name",
    ["main", "ckpt_360", "ckpt_1", "step-tokens1B", "step1-tokens1X", "stage3-step1-tokens1B", "step--1", "step"],
)
def test_malformed_revision_names_value_and_forms(name):
    with pytest.raises(ValueError, match=f"revision={name!r}.*allowed: step"):
        parse_revision(name)


def test_format_rejects_negative():
    with pytest.raises(ValueError, match="tokens=-1"):
        format_revision(1, -1)


def test_nearest_revisions_per_request_ties_to_fewer_tokens():
    available = [parse_revision(n) for n in ("step40-tokens4K", "step10-tokens1K", "step20-tokens2K")]
    picked = nearest_revisions(available, [0, 1400, 1500, 2600, 10**9])
    assert [r.name for r in picked] == [
        "step10-tokens1K",
        "step10-tokens1K",
        "step10-tokens1K",
        "step20-tokens2K",
        "step40-tokens4K",
    ]
    with pytest.raises(CheckpointError):
        nearest_revisions([], [1])


def test_registry_of_known_series():
    assert SERIES["allenai/OLMo-1B-hf"].tokens_per_step == 4_194_304
    assert SERIES["allenai/OLMo-2-1124-7B"].stage == "stage1" and SERIES["allenai/OLMo-2-0425-1B"].stage == "stage1"
    assert SERIES["EleutherAI/pythia-70m"].tokens_per_step == 2_097_152
    assert SERIES["HuggingFaceTB/SmolLM2-135M-intermediate-checkpoints"].init_std == pytest.approx(1 / 24)
    assert {s.init_std for s in SERIES.values() if s.family != "smollm2"} == {0.02}
    assert set(SERIES) >= {"allenai/OLMo-1B-0724-hf", "LLM360/Amber", "EleutherAI/pythia-14m"}


@pytest.mark.parametrize("name", ["step0", "step143000", "step-240000"])
def test_step_only_names_take_tokens_from_the_suite(name):
    """Pythia and SmolLM2 names carry no token count: without a model, the family's first size's batch."""
    step = int(name.removeprefix("step").removeprefix("-"))
    per_step = 1_048_576 if "-" in name else 2_097_152
    assert parse_revision(name) == Revision(name, step, step * per_step)
    assert parse_revision(name, "HuggingFaceTB/SmolLM2-135M-intermediate-checkpoints").tokens == step * 1_048_576


def test_list_folder_series_exact_tokens_from_metadata(folder_series):
    root, seeds = folder_series
    revisions = list_revisions(root)
    assert [r.name for r in revisions] == list(seeds)
    assert [(r.step, r.tokens) for r in revisions] == list(SERIES_POINTS)


def assert_same_weights(model, expected):
    for (name, p), (_, q) in zip(model.state_dict().items(), expected.state_dict().items(), strict=True):
        assert torch.equal(p, q), name


def test_load_from_folder_series(folder_series, tokenizer):
    root, seeds = folder_series
    model, loaded_tokenizer = load_checkpoint(root, "step20-tokens2K")
    assert_same_weights(model, make_model(tokenizer, seeds["step20-tokens2K"]))
    assert not model.training
    text = tiny_corpus(1)[0]
    assert loaded_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_checkpoints_of_a_series_differ(folder_series):
    root, _ = folder_series
    a, _ = load_checkpoint(root, "step10-tokens1K")
    b, _ = load_checkpoint(root, "step40-tokens5K")
    assert not torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)


def test_load_from_offline_hub_cache(hub_cache, folder_series, tokenizer):
    _, seeds = folder_series
    assert [r.name for r in list_revisions(hub_cache)] == list(seeds)  # `main` is not a checkpoint
    model, _ = load_checkpoint(hub_cache, "step40-tokens5K", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert_same_weights(model, make_model(tokenizer, seeds["step40-tokens5K"]).to(torch.bfloat16))


def test_missing_revision_names_nearest_ones(folder_series, hub_cache):
    root, _ = folder_series
    for model in (root, hub_cache):
        with pytest.raises(CheckpointError, match="'step30-tokens3K'.*nearest available: step20-tokens2K, step10"):
            load_checkpoint(model, "step30-tokens3K")
    with pytest.raises(CheckpointError, match="available: step10-tokens1K"):
        load_checkpoint(root, "no-such-branch")


def test_uncached_repo_offline_and_bad_model_id(monkeypatch, tmp_path):
    use_offline_cache(monkeypatch, tmp_path)
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE=1 and allenai/OLMo-1B-hf has no cached revisions"):
        list_revisions("allenai/OLMo-1B-hf")
    with pytest.raises(CheckpointError, match="neither a folder nor a hub id"):
        list_revisions(tmp_path / "missing" / "deeper" / "folder")


@pytest.fixture
def damaged_series(tmp_path, folder_series):
    root, _ = folder_series
    shutil.copytree(root / "step10-tokens1K", tmp_path / "step10-tokens1K")
    return tmp_path, tmp_path / "step10-tokens1K" / "model.safetensors"


@pytest.mark.parametrize("damage", ["delete", "reshape"])
def test_missing_or_mismatched_tensor_is_newly_initialised_weight_error(damaged_series, damage):
    root, weights = damaged_series
    tensors = load_file(weights)
    if damage == "delete":
        del tensors["model.layers.0.mlp.up_proj.weight"]
    else:
        tensors["model.layers.0.mlp.up_proj.weight"] = torch.zeros(3, 3)
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="incomplete.*model.layers.0.mlp.up_proj.weight"):
        load_checkpoint(root, "step10-tokens1K")


def test_corrupt_weights_file(damaged_series):
    root, weights = damaged_series
    with open(weights, "r+b") as file:
        file.truncate(100)
    with pytest.raises(CheckpointError, match="could not be read"):
        load_checkpoint(root, "step10-tokens1K")


def test_invalid_checkpoint_metadata(damaged_series):
    root, _ = damaged_series
    (root / "step10-tokens1K" / "checkpoint.json").write_text('{"step": 10}')
    with pytest.raises(CheckpointError, match="checkpoint.json is not valid"):
        list_revisions(root)


def test_online_listing_is_cached_for_when_the_hub_is_unreachable(monkeypatch, tmp_path):
    use_offline_cache(monkeypatch, tmp_path)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    branches = [SimpleNamespace(name=n) for n in ("main", "step20-tokens2K", "step10-tokens1K")]
    monkeypatch.setattr("llm_validation.checkpoints.list_repo_refs", lambda repo: SimpleNamespace(branches=branches))
    assert [r.name for r in list_revisions(HUB_REPO)] == ["step10-tokens1K", "step20-tokens2K"]

    def unreachable(repo):
        raise OSError("no network")

    monkeypatch.setattr("llm_validation.checkpoints.list_repo_refs", unreachable)
    assert [r.name for r in list_revisions(HUB_REPO)] == ["step10-tokens1K", "step20-tokens2K"]
    with pytest.raises(CheckpointError, match="cannot list the revisions of allenai/OLMo-1B-hf: no network"):
        list_revisions("allenai/OLMo-1B-hf")

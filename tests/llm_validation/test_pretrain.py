"""Controlled mini pre-training: schedule, determinism, resumption, and the series folder format."""

import dataclasses
import json
import math
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm_validation.pretrain import PretrainConfig, pretrain
from llm_validation.pretrain_data import batch_indices
from llm_validation.revisions import format_revision, parse_revision
from llm_validation.schedules import learning_rate, wsd_learning_rate
from llm_validation.series_runs import trained_steps

# 4 x 32 = 128 tokens a step: budgets of 1024 and 4096 tokens are 8- and 32-step runs.
NAMES = [format_revision(8, 1024), format_revision(32, 4096)]
CONFIG = PretrainConfig(
    preset="tiny",
    vocab_size=320,
    budgets=(4096, 1024),
    seq_len=32,
    batch_size=4,
    lr=3e-3,
    warmup_fraction=0.1,
    max_train_chars=60_000,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("separate")
    return folder, pretrain(CONFIG, folder, progress=False)


def weights(folder):
    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("total, warmup", [(1, 0), (7, 3), (32, 3), (1000, 50)])
def test_schedule_warms_up_then_reaches_exactly_zero(total, warmup):
    lrs = [learning_rate(t, peak=0.01, warmup_steps=warmup, total_steps=total) for t in range(total + 1)]
    assert lrs[-1] == 0.0 and all(lr > 0 for lr in lrs[:-1])
    assert lrs[warmup] == 0.01 and (warmup == 0 or lrs[0] == 0.01 / warmup)
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1 :]))
    mid = warmup + (total - warmup) // 2
    assert lrs[mid] == pytest.approx(0.005 * (1 + math.cos(math.pi * (mid - warmup) / (total - warmup))))


@pytest.mark.parametrize("budgets", [(0,), (1024, -5), (2.5,)])
def test_bad_budget_names_the_value(budgets):
    with pytest.raises(ValueError, match=f"budget={budgets[-1]}"):
        dataclasses.replace(CONFIG, budgets=budgets)


def test_budgets_are_sorted_and_must_map_to_distinct_steps():
    assert CONFIG.budgets == (1024, 4096)
    with pytest.raises(ValueError, match="1024 and 1050 both round to step 8"):
        dataclasses.replace(CONFIG, budgets=(1024, 1050))
    with pytest.raises(ValueError, match="budget=10 "):
        dataclasses.replace(CONFIG, budgets=(10,))


@pytest.mark.parametrize("field, value", [("corpus", "c4"), ("mode", "both"), ("preset", "7b")])
def test_unknown_names_are_rejected(field, value):
    with pytest.raises(ValueError, match=f"{field}='{value}' is unknown"):
        dataclasses.replace(CONFIG, **{field: value})


def test_series_folder_loads_with_exact_records(series):
    folder, checkpoints = series
    assert [c.name for c in checkpoints] == NAMES
    for path, budget, steps in zip(checkpoints, CONFIG.budgets, (8, 32)):
        record = json.loads((path / "checkpoint.json").read_text())
        assert (record["step"], record["tokens"], record["budget"]) == (steps, steps * 128, budget)
        assert parse_revision(path.name).step == steps
        assert record["schedule"]["total_steps"] == steps and record["schedule"]["lr_at_step"] == 0.0
        assert record["mode"] == "separate" and record["seed"] == 0 and record["data"]["corpus"] == "shakespeare"
        assert len(record["train_loss"]["loss"]) == steps and record["train_loss"]["every"] == 1
        model = AutoModelForCausalLM.from_pretrained(path)
        assert sum(p.numel() for p in model.parameters()) == record["parameters"] == 30_720
    losses = json.loads((checkpoints[-1] / "checkpoint.json").read_text())["train_loss"]["loss"]
    assert losses[-1] < losses[0] - 0.5  # it learns


def test_tokenizer_round_trips_and_loads_from_each_checkpoint(series):
    folder, checkpoints = series
    tokenizer = AutoTokenizer.from_pretrained(checkpoints[0])
    assert len(tokenizer) == 320 and tokenizer.eos_token_id == 0
    for text in ["To be, or not to be: that is the question.\n", "naïve café — 東京 🙂\n\tx"]:
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    stored = AutoTokenizer.from_pretrained(folder / "tokenizer")
    assert stored.get_vocab() == tokenizer.get_vocab()


def test_finished_checkpoints_are_skipped(series):
    folder, checkpoints = series
    before = {p: (p / "model.safetensors").stat().st_mtime_ns for p in checkpoints}
    assert pretrain(CONFIG, folder, progress=False) == checkpoints
    assert before == {p: (p / "model.safetensors").stat().st_mtime_ns for p in checkpoints}
    assert not list(folder.glob(".resume-*")) and not list(folder.glob(".tmp*"))


def test_a_folder_refuses_another_config_but_a_separate_series_may_grow(series, tmp_path):
    folder, checkpoints = series
    with pytest.raises(ValueError, match="other lr"):
        pretrain(dataclasses.replace(CONFIG, lr=1e-3), folder, progress=False)
    with pytest.raises(ValueError, match="other mode"):
        pretrain(dataclasses.replace(CONFIG, mode="single"), folder, progress=False)
    grown = tmp_path / "grown"
    shutil.copytree(folder, grown)
    paths = pretrain(dataclasses.replace(CONFIG, budgets=(2048,)), grown, progress=False)
    assert [p.name for p in paths] == [format_revision(16, 2048)]
    assert json.loads((grown / "series.json").read_text())["config"]["budgets"] == [1024, 2048, 4096]
    assert [p.name for p in pretrain(CONFIG, grown, progress=False)] == [c.name for c in checkpoints]


def test_same_seed_same_weights_other_seed_not(series, tmp_path):
    folder, checkpoints = series
    again = pretrain(CONFIG, tmp_path / "again", progress=False)
    for a, b in zip(checkpoints, again):
        assert_same_weights(a, b)
    other = pretrain(dataclasses.replace(CONFIG, seed=1, budgets=(1024,)), tmp_path / "seed1", progress=False)
    assert not torch.equal(
        weights(other[0])["model.embed_tokens.weight"], weights(checkpoints[0])["model.embed_tokens.weight"]
    )


def test_killed_and_resumed_equals_uninterrupted(series, tmp_path, monkeypatch):
    folder, checkpoints = series
    out = tmp_path / "resumed"
    # Stops inside the first run and at its end; then a crash inside the second run loses the
    # steps after its last periodic save (resume_every=3: step 12); the fourth call finishes.
    assert pretrain(CONFIG, out, progress=False, resume_every=3, max_steps_this_call=5) == []
    assert [p.name for p in out.glob(".resume-*")] == [".resume-step8.pt"]
    assert [p.name for p in pretrain(CONFIG, out, progress=False, resume_every=3, max_steps_this_call=3)] == NAMES[:1]

    def crash_at_step_14(t, **schedule):
        if t == 14:
            raise KeyboardInterrupt
        return learning_rate(t, **schedule)

    with monkeypatch.context() as patch:
        patch.setattr("llm_validation.series_runs.learning_rate", crash_at_step_14)
        with pytest.raises(KeyboardInterrupt):
            pretrain(CONFIG, out, progress=False, resume_every=3)
    assert torch.load(out / ".resume-step32.pt")["step"] == 12
    resumed = pretrain(CONFIG, out, progress=False, resume_every=3)
    for a, b in zip(checkpoints, resumed, strict=True):
        assert_same_weights(a, b)
        assert (
            json.loads((a / "checkpoint.json").read_text())["train_loss"]
            == json.loads((b / "checkpoint.json").read_text())["train_loss"]
        )


def test_single_mode_saves_unannealed_checkpoints_on_one_schedule(series, tmp_path):
    folder, separate = series
    single = pretrain(dataclasses.replace(CONFIG, mode="single"), tmp_path / "single", progress=False)
    records = [json.loads((p / "checkpoint.json").read_text()) for p in single]
    assert [r["schedule"]["total_steps"] for r in records] == [32, 32]
    assert records[0]["schedule"]["lr_at_step"] > 0 and records[1]["schedule"]["lr_at_step"] == 0.0
    # The last checkpoint is the separate-mode run of the largest budget, bit for bit ...
    assert_same_weights(single[1], separate[1])
    # ... but the first is mid-schedule, not the annealed 8-step run.
    assert not torch.equal(
        weights(single[0])["model.embed_tokens.weight"], weights(separate[0])["model.embed_tokens.weight"]
    )


def test_data_order_is_a_seeded_permutation_per_epoch():
    rows = [batch_indices(step, 4, 10, seed=0) for step in range(5)]  # 20 rows: two epochs of 10
    flat = [int(i) for r in rows for i in r]
    assert sorted(flat[:10]) == list(range(10)) == sorted(flat[10:]) and flat[:10] != flat[10:]
    assert all((a == b).all() for a, b in zip(rows, [batch_indices(s, 4, 10, seed=0) for s in range(5)]))


def test_every_preset_is_usable_as_listed_without_a_vocab_size():
    from llm_validation.models import PRESETS
    from llm_validation.pretrain_config import MIN_VOCAB

    assert list(PRESETS)[0] == "tiny"
    for name in PRESETS:
        config = PretrainConfig(preset=name, budgets=(1024,), seq_len=32, batch_size=4)
        assert config.model_vocab_size >= MIN_VOCAB


WSD = dataclasses.replace(CONFIG, mode="wsd", budgets=(1024, 2048, 4096))  # 8, 16, 32 steps


@pytest.mark.parametrize("warmup, start, total", [(0, 6, 8), (3, 20, 32), (5, 5, 9)])
def test_wsd_is_constant_on_the_trunk_and_decays_to_exactly_zero(warmup, start, total):
    lrs = [
        wsd_learning_rate(t, peak=0.01, warmup_steps=warmup, decay_start=start, total_steps=total)
        for t in range(total + 1)
    ]
    assert lrs[-1] == 0.0 and all(lr > 0 for lr in lrs[:-1])  # every update is made at a rate > 0
    assert lrs[warmup:start] == [0.01] * (start - warmup)  # the trunk
    assert all(a > b for a, b in zip(lrs[start:], lrs[start + 1 :]))  # the branch decays linearly
    assert lrs[start + 1] == pytest.approx(0.01 * (total - start - 1) / (total - start))


def test_a_wsd_series_trains_a_trunk_and_one_decay_branch_per_budget(tmp_path, monkeypatch):
    import llm_validation.pretrain as module

    updates = []
    original = module.batch_indices
    monkeypatch.setattr(module, "batch_indices", lambda step, *a: updates.append(step) or original(step, *a))
    made = pretrain(WSD, tmp_path / "wsd", progress=False)
    # trunk to the last branch's start (32 - round(0.2 x 32) = 26), then branches of 2, 3, 6 updates:
    # 37 updates for checkpoints that separate runs make in 8 + 16 + 32 = 56.
    assert len(updates) == 26 + 2 + 3 + 6 == trained_steps(WSD)
    assert trained_steps(dataclasses.replace(WSD, mode="separate")) == 56
    records = [json.loads((p / "checkpoint.json").read_text()) for p in made]
    assert [r["mode"] for r in records] == ["wsd"] * 3 and [r["tokens"] for r in records] == [1024, 2048, 4096]
    assert [r["schedule"]["decay_start"] for r in records] == [6, 13, 26]
    assert all(r["schedule"]["lr_at_step"] == 0.0 and r["schedule"]["decay_fraction"] == 0.2 for r in records)
    assert not list((tmp_path / "wsd").glob(".branch-*")) and not list((tmp_path / "wsd").glob(".resume-*"))


def test_wsd_checkpoints_are_deterministic_and_survive_interruption(tmp_path):
    whole = pretrain(WSD, tmp_path / "a", progress=False)
    again = pretrain(WSD, tmp_path / "b", progress=False)
    out, calls = tmp_path / "c", 0
    resumed = []
    while len(resumed) < 3:  # killed every 5 updates, started again
        resumed = pretrain(WSD, out, progress=False, resume_every=4, max_steps_this_call=5)
        calls += 1
        assert calls < 20
    for a, b, c in zip(whole, again, resumed, strict=True):
        assert_same_weights(a, b)
        assert_same_weights(a, c)
    assert calls >= 7  # 37 updates, 5 a call: interrupted inside the trunk and inside branches


def test_a_wsd_series_gains_trunk_checkpoints_at_every_budget_without_retraining_its_branches(tmp_path):
    """The trunk retrained to the largest budget saves ``trunk-<revision>`` at each budget's step with
    the lr still at its peak; the annealed branches are not trained again, and a series trained so
    from scratch has the same branches bit for bit (the longer trunk passes the same states)."""
    import llm_validation.pretrain as module

    out = tmp_path / "wsd"
    branches = pretrain(WSD, out, progress=False)
    stamps = [(p / "checkpoint.json").stat().st_mtime_ns for p in branches]
    trunked = dataclasses.replace(WSD, trunk_checkpoints=3)
    updates = []
    original = module.batch_indices
    module.batch_indices = lambda step, *a: updates.append(step) or original(step, *a)
    try:
        made = pretrain(trunked, out, progress=False)
    finally:
        module.batch_indices = original
    assert updates == list(range(32))  # the trunk alone, from the initialisation to the largest budget
    assert [(p / "checkpoint.json").stat().st_mtime_ns for p in branches] == stamps
    trunk = [p for p in made if p.name.startswith("trunk-")]
    assert [p.name for p in trunk] == [f"trunk-{p.name}" for p in branches]
    records = [json.loads((p / "checkpoint.json").read_text()) for p in trunk]
    assert [r["tokens"] for r in records] == [1024, 2048, 4096] and [r["step"] for r in records] == [8, 16, 32]
    assert all(r["schedule"]["lr_at_step"] == WSD.lr for r in records)  # not annealed
    assert trained_steps(trunked) == 32 + 2 + 3 + 6
    # From scratch in one call, the series is the same: branches bit for bit, trunk checkpoints too.
    fresh = pretrain(trunked, tmp_path / "fresh", progress=False)
    for a, b in zip(sorted(made), sorted(fresh), strict=True):
        assert_same_weights(a, b)
    with pytest.raises(ValueError, match="allowed only with mode wsd"):
        dataclasses.replace(CONFIG, trunk_checkpoints=1)
    with pytest.raises(ValueError, match="a whole number of budgets, 0 to 3"):
        dataclasses.replace(WSD, trunk_checkpoints=True)
    # The two smallest budgets only: the trunk runs to the last branch's start (26 steps), saving at 8 and 16.
    two = dataclasses.replace(WSD, trunk_checkpoints=2)
    assert [t.revision for t in two.trunk_targets()] == [f"trunk-{p.name}" for p in branches[:2]]
    assert trained_steps(two) == trained_steps(WSD) == 26 + 2 + 3 + 6


def test_trunk_revisions_parse_as_their_own_stage():
    from llm_validation.revisions import TRUNK_STAGE, parse_revision

    revision = parse_revision("trunk-step8-tokens1024")
    assert (revision.step, revision.tokens, revision.stage) == (8, 1024, TRUNK_STAGE)


@pytest.mark.parametrize("mode", ["separate", "wsd"])
def test_two_workers_make_the_checkpoints_of_one_process(series, tmp_path, mode):
    """Budgets of a separate series in two processes; a WSD trunk in segments whose snapshots start
    the branches in the other process: the same weights as one process, one thread each."""
    config = WSD if mode == "wsd" else CONFIG
    one = series[1] if mode == "separate" else pretrain(config, tmp_path / "one", progress=False, threads=1)
    two = pretrain(config, tmp_path / "two", progress=False, threads=1, workers=2)
    for a, b in zip(one, two, strict=True):
        assert_same_weights(a, b)
    assert not list((tmp_path / "two").glob(".branch-*")) and not list((tmp_path / "two").glob(".resume-*"))


def test_only_trains_the_named_budgets_of_a_separate_series(series, tmp_path):
    from llm_validation.pretrain import units

    assert units(CONFIG) == NAMES and units(WSD) == []
    made = pretrain(CONFIG, tmp_path / "part", progress=False, only=[NAMES[1]])
    assert [p.name for p in made] == [NAMES[1]]
    assert_same_weights(made[0], series[1][1])
    with pytest.raises(ValueError, match="a separate one trains by budget"):
        pretrain(WSD, tmp_path / "w", progress=False, only=["x"])


@pytest.mark.parametrize("n_budgets", [6, 8, 10])
def test_a_doubling_wsd_series_trains_at_most_1_3x_its_largest_budget(n_budgets):
    """The trunk reaches the largest budget's branch start (0.8 B); the branches add 0.2 x (B + B/2 +
    ...) < 0.4 B: ~1.2x the largest budget, where separate runs cost ~2x."""
    budgets = tuple(4096 * 78 * 2**k for k in range(n_budgets))
    config = PretrainConfig(preset="20k", budgets=budgets, seq_len=64, batch_size=64, mode="wsd")
    largest = config.targets()[-1].step
    assert trained_steps(config) / largest <= 1.3
    assert trained_steps(config) / largest == pytest.approx(1.2, abs=0.01)
    separate = trained_steps(dataclasses.replace(config, mode="separate"))  # 1 + 1/2 + ... = 2 - 2^(1-n)
    assert separate / largest == pytest.approx(2 - 2 ** (1 - n_budgets), abs=0.002)
    assert trained_steps(dataclasses.replace(config, mode="single")) == largest


def test_the_repetition_of_the_largest_budget_is_recorded_and_enforced(tmp_path):
    """``epochs`` = tokens / training tokens in every checkpoint.json; beyond ``max_epochs`` the series is
    refused once its data are tokenised, before any update."""
    made = pretrain(CONFIG, tmp_path / "ok", progress=False)
    record = json.loads((made[-1] / "checkpoint.json").read_text())
    train_tokens = record["data"]["train_tokens"]
    assert record["epochs"] == pytest.approx(4096 / train_tokens)
    limit = 0.9 * 4096 / train_tokens
    with pytest.raises(ValueError, match=rf"passes over the {train_tokens:,} training tokens.*max_epochs"):
        pretrain(dataclasses.replace(CONFIG, max_epochs=limit), tmp_path / "refused", progress=False)
    assert not any((tmp_path / "refused").glob("step*"))
    allowed = pretrain(
        dataclasses.replace(CONFIG, max_epochs=1.1 * 4096 / train_tokens), tmp_path / "a", progress=False
    )
    assert len(allowed) == 2

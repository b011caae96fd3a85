import numpy as np
import pandas as pd
import pytest

from rundir import store


def _rows(n=3, **extra):
    frame = pd.DataFrame(
        {
            "source": "theory",
            "setup": "x",
            "checkpoint": [f"T={i}" for i in range(n)],
            "pretrain_time": np.arange(n, dtype=float),
            "modification": "none",
            "gamma": np.nan,
            "lr": np.nan,
            "steps": np.nan,
            "reg": np.nan,
            "seed": 0,
            "metric": "pretrain_loss",
            "value": np.linspace(1, 0, n),
        }
    )
    return frame.assign(**extra)


def test_write_table_round_trips_schema(tmp_path):
    store.write_table(tmp_path / "m.parquet", _rows(depth=2))
    back = pd.read_parquet(tmp_path / "m.parquet")
    assert list(back.columns[:12]) == list(store.REQUIRED_COLUMNS)
    assert str(back.seed.dtype) == "int64" and back.depth.tolist() == [2, 2, 2]


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda f: f.drop(columns="metric"), "metric"),
        (lambda f: f.assign(source="simulation"), "source"),
        (lambda f: f.assign(modification="noise"), "modification"),
    ],
)
def test_write_table_rejects_bad_rows_and_writes_nothing(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        store.write_table(tmp_path / "m.parquet", bad(_rows()))
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "m.json"
    store.write_json(path, {"a": 1})
    with pytest.raises(RuntimeError):
        with store.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert store.read_manifest(tmp_path) if path.name == store.MANIFEST else path.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_load_merges_theory_and_llm_runs(tmp_path):
    for name, source in (("a", "theory"), ("b", "llm")):
        store.write_table(tmp_path / name / store.METRICS, _rows(source=source))
        store.write_json(tmp_path / name / store.MANIFEST, {"preset": name})
    runs = store.find_runs(tmp_path)
    frame = store.load(runs)
    assert sorted(frame.source.unique()) == ["llm", "theory"] and len(frame) == 6


def _run(path, command):
    path.mkdir(parents=True)
    store.write_json(path / store.MANIFEST, {"command": command, "source": "llm"})
    return path


def test_run_names_are_unique_and_say_where_each_run_lies(tmp_path):
    """Two fine-tuning runs named alike in different folders (a study's dataset and L2-pull stages),
    one perturb run, and the same relative path below two roots: no two names alike."""
    a, b = tmp_path / "a", tmp_path / "b"
    runs = [
        _run(a / "finetune" / "shakespeare" / "20k_seed=0", "llm finetune"),
        _run(a / "finetune-reg" / "reg=1" / "20k_seed=0", "llm finetune"),
        _run(a / "perturb" / "20k_seed=0", "llm perturb"),
        _run(b / "finetune" / "shakespeare" / "20k_seed=0", "llm finetune"),
    ]
    names = store.run_names(runs, [a, b])
    assert names == [
        "llm_finetune-finetune_shakespeare_20k_seed=0",
        "llm_finetune-finetune-reg_reg=1_20k_seed=0",
        "llm_perturb",
        "llm_finetune-finetune_shakespeare_20k_seed=0-2",
    ]
    assert len(set(names)) == len(names)
    # Without roots, the directory name, as before; a run that is its own root too.
    assert store.run_names(runs[:2]) == ["llm_finetune-20k_seed=0", "llm_finetune-20k_seed=0-2"]
    assert store.run_names(runs[:2], [runs[0]]) == ["llm_finetune-20k_seed=0", "llm_finetune-20k_seed=0-2"]


def test_an_inflection_leaves_the_initialisation_at_zero_tokens_out_of_its_log_axis():
    """A series whose first checkpoint is step0 (0 tokens): T* is the same with and without it."""
    from rundir.derived import curve_inflection

    T = np.array([1e3, 2e3, 4e3, 8e3, 16e3])
    curve = pd.DataFrame({"pretrain_time": T, "value": [5.0, 4.0, 3.5, 3.7, 4.2]})
    with_init = pd.concat([pd.DataFrame({"pretrain_time": [0.0], "value": [9.0]}), curve], ignore_index=True)
    t_star, kind = curve_inflection(curve)
    assert kind == "interior" and 2e3 < t_star < 8e3
    assert curve_inflection(with_init) == (t_star, kind)

"""The CLI contract: exit codes, one-line messages, nothing written on bad input."""

import pytest

from experiments import cli


def run(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_presets(capsys):
    code, out, _ = run(capsys, "theory", "--list")
    assert code == 0 and "gaussian" in out and "schedule" in out


@pytest.mark.parametrize("argv, needle", [
    (["theory", "nonexistent"], "'nonexistent' is unknown"),
    (["theory", "smoke", "bogus=1"], "'bogus' is unknown"),
    (["theory", "smoke", "gamma=abc"], "gamma='abc' is not a valid float"),
    (["theory", "smoke", "gamma=-0.5"], "gamma=-0.5 must be >= 0"),
    (["theory", "smoke", "depth=2.5"], "depth='2.5' is not a valid int"),
    (["theory", "smoke", "method=magic"], "method='magic' is not allowed"),
    (["theory", "smoke", "gamma"], "must look like FIELD=VALUE"),
    (["theory", "--list", "smoke"], "--list takes no preset"),
    (["theory"], "a preset is required"),
    (["theory", "smoke", "t_min=10", "t_max=1"], "t_min=10.0 must be < t_max=1.0"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(capsys, tmp_path, argv, needle):
    out = tmp_path / "run"
    code, _, err = run(capsys, *argv, *(["--out", str(out)] if argv[0] == "theory" and "--list" not in argv else []))
    assert code == 2
    assert err.count("\n") == 1 and needle in err, err
    assert not out.exists()


def test_unwritable_out_exits_2(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, "theory", "smoke", "--out", str(blocker / "run"))
    assert code == 2 and "not writable" in err and err.count("\n") == 1


def test_theory_run_and_figures(capsys, tmp_path):
    out = tmp_path / "smoke"
    code, stdout, _ = run(capsys, "theory", "smoke", "n_t=7", "gamma=0.2,0.4", "--out", str(out), "--quiet")
    assert code == 0 and (out / "metrics.parquet").is_file() and (out / "manifest.json").is_file()
    code, stdout, _ = run(capsys, "figures", "--results", str(out), "--out", str(tmp_path / "figs"))
    assert code == 0
    pngs = list((tmp_path / "figs").glob("*.png"))
    assert pngs and all(p.stat().st_size > 0 for p in pngs)


def test_figures_without_runs_exits_2(capsys, tmp_path):
    code, _, err = run(capsys, "figures", "--results", str(tmp_path))
    assert code == 2 and "no run directory" in err

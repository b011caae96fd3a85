"""The CLI's good paths; bad input is the battery's (tests/test_bad_input.py)."""

from experiments import cli


def run(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_presets(capsys):
    code, out, _ = run(capsys, "theory", "--list")
    assert code == 0 and "gaussian" in out and "schedule" in out


def test_variants_default_to_their_own_run_directory(capsys, tmp_path, monkeypatch):
    """The preset as it stands goes where ``ovt reproduce`` puts it; a variant never meets that run."""
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "theory", "smoke", "--quiet")[0] == 0
    assert run(capsys, "theory", "smoke", "n_t=5", "gamma=0.2,0.4", "--quiet")[0] == 0
    assert run(capsys, "theory", "smoke", "--quick", "--quiet")[0] == 0
    theory = tmp_path / "results" / "theory"
    assert sorted(p.name for p in theory.iterdir()) == ["smoke", "smoke-gamma=0.2,0.4_n_t=5", "smoke-quick"]
    assert all((p / "metrics.parquet").is_file() for p in theory.iterdir())


def test_theory_run_and_figures(capsys, tmp_path):
    out = tmp_path / "smoke"
    code, stdout, _ = run(capsys, "theory", "smoke", "n_t=7", "gamma=0.2,0.4", "--out", str(out), "--quiet")
    assert code == 0 and (out / "metrics.parquet").is_file() and (out / "manifest.json").is_file()
    code, stdout, _ = run(capsys, "figures", "--results", str(out), "--out", str(tmp_path / "figs"))
    assert code == 0
    pngs = list((tmp_path / "figs").glob("*.png"))
    assert pngs and all(p.stat().st_size > 0 for p in pngs)


def test_figures_from_two_roots_write_every_store_once(capsys, tmp_path):
    """--results A --results B reads both roots; two runs of one kind at the same place below each get
    two files, and no path is written twice in one call."""
    for root in ("a", "b"):
        for name in ("x", "y"):
            out = tmp_path / root / name / "smoke"
            assert run(capsys, "theory", "smoke", "n_t=7", "--out", str(out), "--quiet")[0] == 0
    code, stdout, _ = run(
        capsys,
        "figures",
        "--results",
        str(tmp_path / "a"),
        "--results",
        str(tmp_path / "b"),
        "--out",
        str(tmp_path / "figs"),
    )
    written = stdout.split()
    assert code == 0 and len(written) == len(set(written)) == 4 * 2  # 4 stores x (png, pdf)
    assert sorted(p.name for p in (tmp_path / "figs").glob("*.png")) == [
        "smoke-x_smoke-2.png",
        "smoke-x_smoke.png",
        "smoke-y_smoke-2.png",
        "smoke-y_smoke.png",
    ]

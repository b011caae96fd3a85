"""The result store both worlds write (docs/ARCHITECTURE.md, "Result store").

A run directory holds ``manifest.json`` and ``metrics.parquet`` (long form, one row per measured
number). Sweeps write each finished chunk to ``chunks/NNNNN.parquet`` first; ``metrics.parquet`` is
the concatenation of all chunks plus derived rows, rewritten whole. Every write goes to a temporary
file in the same directory and is renamed into place, so a killed run leaves either the old file or
the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from rundir.atomic import out_of_space
from rundir.atomic import replaced as atomic_path

REQUIRED_COLUMNS = {
    "source": "string",
    "setup": "string",
    "checkpoint": "string",
    "pretrain_time": "float64",
    "modification": "string",
    "gamma": "float64",
    "lr": "float64",
    "steps": "float64",
    "reg": "float64",
    "seed": "int64",
    "metric": "string",
    "value": "float64",
}
# Columns some rows carry; ``load`` gives every one of them the same dtype and fill on every run, so
# theory and LLM rows concatenate cleanly: "" = no lr policy applies (pre-training, noise rows).
# ``t_star_kind``: what an inflection row's minimum is (``analysis.inflection.KINDS``: interior, flat,
# below, above, none); "" on every other row, and on the inflection rows of stores written before it.
OPTIONAL_COLUMNS = {
    "lr_policy": ("string", ""),
    "t_star_kind": ("string", ""),
    "diverged": ("bool", False),
    "steps_done": ("float64", np.nan),
    "mean_nll": ("float64", np.nan),
    "n_tokens": ("float64", np.nan),
    "train_steps": ("float64", np.nan),
    "step": ("float64", np.nan),
}
SOURCES = ("theory", "llm")
MODIFICATIONS = ("none", "gaussian", "finetune", "quantization", "multimodal")
MANIFEST = "manifest.json"
METRICS = "metrics.parquet"
CHUNKS = "chunks"


def write_json(path: Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(_json_text(payload))


def write_status(path: Path, payload: dict) -> None:
    """Write a run's status record; on a full disk, where no temporary file fits, in place.

    The rename of ``write_json`` needs a second copy's worth of free space; a record that says why
    a run stopped is worth more than the atomicity of that one write, and its few hundred added
    bytes fit in the blocks the old record already holds.
    """
    try:
        write_json(path, payload)
    except OSError as err:
        if not out_of_space(err) or not Path(path).is_file():
            raise
        with open(path, "r+") as handle:
            handle.write(_json_text(payload))
            handle.truncate()


def _json_text(payload: dict) -> str:
    return json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n"


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (tuple, set)):
        return list(x)
    raise TypeError(f"cannot store {type(x).__name__} in JSON")


def validate(frame: pd.DataFrame) -> pd.DataFrame:
    """Check the required columns and vocabularies; return the frame with canonical dtypes and order,
    and every optional column it holds in its dtype, its default where a row has none (a summary row
    concatenated with measured ones leaves their columns empty)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"metrics rows lack required columns {missing}; required: {list(REQUIRED_COLUMNS)}")
    bad = set(frame["source"]) - set(SOURCES)
    if bad:
        raise ValueError(f"source={sorted(bad)} is not allowed; allowed: {SOURCES}")
    bad = set(frame["modification"]) - set(MODIFICATIONS)
    if bad:
        raise ValueError(f"modification={sorted(bad)} is not allowed; allowed: {MODIFICATIONS}")
    frame = frame.astype(REQUIRED_COLUMNS)
    for name, (dtype, fill) in OPTIONAL_COLUMNS.items():
        if name in frame:
            frame[name] = _filled(frame[name], dtype, fill)
    extra = [c for c in frame.columns if c not in REQUIRED_COLUMNS]
    return frame[list(REQUIRED_COLUMNS) + extra].reset_index(drop=True)


# A row that was not modified in some way leaves that way's columns NaN: no noise -> gamma NaN,
# no fine-tuning -> lr, steps, reg NaN.
UNMODIFIED = {"gamma": np.nan, "lr": np.nan, "steps": np.nan, "reg": np.nan}


def block(**columns) -> pd.DataFrame:
    """Store rows from ``columns`` (lists, or scalars broadcast to them; at least one list): the
    required columns first, in the store's order, with ``UNMODIFIED``'s NaN where a block does not set
    them; the other columns after, in the order given."""
    frame = pd.DataFrame(columns)
    for name, value in UNMODIFIED.items():
        if name not in frame:
            frame[name] = value
    return frame[[c for c in REQUIRED_COLUMNS if c in frame] + [c for c in frame if c not in REQUIRED_COLUMNS]]


def write_table(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        validate(frame).to_parquet(tmp, index=False)


def chunk_path(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / CHUNKS / f"{index:05d}.parquet"


def stored_chunks(run_dir: Path) -> set[int]:
    folder = Path(run_dir) / CHUNKS
    return {int(p.stem) for p in folder.glob("*.parquet")} if folder.is_dir() else set()


def read_chunks(run_dir: Path) -> pd.DataFrame:
    paths = sorted((Path(run_dir) / CHUNKS).glob("*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True) if paths else pd.DataFrame()


def read_manifest(run_dir: Path) -> dict:
    """The run's manifest; ValueError naming the file when it is not a JSON object."""
    return read_object(Path(run_dir) / MANIFEST, "delete the run directory or choose another")


def read_object(path: Path, remedy: str) -> dict:
    """The JSON object in ``path``; ValueError naming the file, what it holds instead and ``remedy``."""
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); {remedy}") from None
    if not isinstance(found, dict):
        raise ValueError(f"{path} holds {json_kind(found)}, not a JSON object; {remedy}")
    return found


def json_kind(value) -> str:
    """What a JSON value is, in JSON's words: ``a list``, ``a string``, ``null``, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    names = {list: "a list", str: "a string", int: "a number", float: "a number", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def read_table(run_dir: Path | str) -> pd.DataFrame:
    """One run's ``metrics.parquet`` with the required columns checked and every optional column
    present in its canonical dtype; ValueError naming the file otherwise."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} holds no {METRICS}; is it a run directory?")
    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow's many error types: all mean an unreadable file
        raise ValueError(f"{path} is not a readable parquet table ({type(error).__name__})") from None
    try:
        frame = validate(frame)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: {error}") from None
    for name, (dtype, fill) in OPTIONAL_COLUMNS.items():
        if name not in frame:
            frame[name] = _filled(pd.Series(fill, index=frame.index), dtype, fill)
    return frame


def _filled(column: pd.Series, dtype: str, fill) -> pd.Series:
    """``column`` in ``dtype`` with ``fill`` where it is empty (NaN or None)."""
    return column.astype("object").where(column.notna(), fill).astype(dtype)


def load(run_dirs: Iterable[Path | str] | Path | str) -> pd.DataFrame:
    """One DataFrame from one run directory or many, theory and LLM alike (column ``run`` = the dir).

    Columns: ``REQUIRED_COLUMNS`` and ``OPTIONAL_COLUMNS`` in their dtypes, then swept fields."""
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    frames = [read_table(d).assign(run=str(d)) for d in run_dirs]
    if not frames:
        raise ValueError("no run directories given")
    return pd.concat(frames, ignore_index=True)


def run_kind(run_dir: Path | str) -> str:
    """What a run is: its theory preset, or its LLM command with ``_`` (``llm perturb`` -> ``llm_perturb``)."""
    manifest = read_manifest(run_dir)
    kind = manifest.get("preset") or manifest.get("command")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"{Path(run_dir) / MANIFEST} names no preset or command")
    return kind.replace(" ", "_")


def run_names(runs: list[Path], roots: list[Path] | None = None) -> list[str]:
    """One file-safe name per run, never two alike: its kind, where it is the only run of its kind;
    else the kind and the run's path below the root it was found under (``roots``; default its
    parent), folders joined by ``_`` (``llm_finetune-finetune_shakespeare_20k_seed=0``); a name still
    shared (the same path below two roots) gets ``-2``, ``-3``, ... in order."""
    kinds = [run_kind(r) for r in runs]
    names = []
    for kind, run in zip(kinds, runs):
        if kinds.count(kind) == 1:
            names.append(kind)
            continue
        run = Path(run).resolve()
        below = [run.relative_to(Path(r).resolve()) for r in roots or [] if run.is_relative_to(Path(r).resolve())]
        below = [p for p in below if p.parts]
        relative = min(below, key=lambda p: len(p.parts)) if below else Path(run.name)
        names.append(f"{kind}-" + "_".join(relative.parts))
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return [safe_name(name) for name in unique]


def safe_name(name: str) -> str:
    """A file or directory name from ``name``: characters other than letters, digits and ``._=,+-`` become ``_``."""
    return "".join(c if c.isalnum() or c in "._=,+-" else "_" for c in name)


def find_runs(root: Path | str) -> list[Path]:
    """Run directories at or below ``root`` (those holding both manifest.json and metrics.parquet)."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob(METRICS) if (p.parent / MANIFEST).is_file())

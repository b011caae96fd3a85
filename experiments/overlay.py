"""A result store laid over the explorer (``notebooks/explore.py``): every family of a store fitted as
``ovt compare`` fits it (the point fit, no bootstrap), giving the map T = kappa x tokens, and the
stored T* of every theory cell the explorer can show (``explore.Setup``)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.families import fittable
from experiments import compare
from experiments.explore import D, Setup
from experiments.sweep import compute as theory_run
from experiments.sweep.config import TheoryConfig, cells
from rundir import store


@dataclasses.dataclass(frozen=True)
class Overlay:
    """A loaded store: its fitted families (``ovt compare``'s entries, no bootstrap), the runs that had
    nothing to fit and why, and for theory runs the stored T* of every cell the explorer can show."""

    path: str
    fits: list[dict]
    skipped: list[str]
    stored: pd.DataFrame  # setup, modification, stored T*, kind

    def kappa(self) -> dict[str, float]:
        """{family: kappa} of the fitted map T_flow = kappa x T_store (tokens for an LLM store)."""
        return {f["name"]: f["linear_model"]["params"]["kappa"] for f in self.fits}

    def stored_t_star(self, setup: Setup, modification: str) -> float | None:
        """The stored T* of ``setup``'s cell for ``modification`` (gaussian, finetune); None if absent.
        Refuses a ``setup`` that is not a ``Setup`` and another ``modification``."""
        if not isinstance(setup, Setup):
            raise ValueError(f"setup={setup!r} must be an explore.Setup")
        allowed = [m for m, _ in theory_run.INFLECTIONS]
        if modification not in allowed:
            raise ValueError(f"modification={modification!r} is not allowed; choose one of: {', '.join(allowed)}")
        rows = self.stored[(self.stored.setup == setup) & (self.stored.modification == modification)]
        return float(rows.t_star.iloc[0]) if len(rows) else None


def _config_from_manifest(manifest: dict) -> TheoryConfig | None:
    """The ``TheoryConfig`` a theory run's manifest records (``config.to_dict``), or None."""
    recorded = manifest.get("config")
    if manifest.get("source") != "theory" or not isinstance(recorded, dict):
        return None
    fields = {f.name: f for f in dataclasses.fields(TheoryConfig)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items() if k in fields and k != "grid"}
    grid = tuple((k, tuple(v)) for k, v in recorded.get("grid", {}).items())
    try:
        return TheoryConfig(**values, grid=grid)
    except (TypeError, ValueError):
        return None


def _stored_rows(run: Path, frame: pd.DataFrame) -> list[dict]:
    """(setup, modification, T*, kind) of every stored inflection row of a theory run whose cell the
    explorer can show."""
    cfg = _config_from_manifest(store.read_manifest(run))
    if cfg is None:
        return []
    names = [n for n, _ in cfg.grid]
    inflection = frame[frame.checkpoint == "inflection"]
    found = []
    for cell in cells(cfg):
        setup = Setup.from_config(cell)
        if setup is None:
            continue
        for modification, _ in theory_run.INFLECTIONS:
            rows = inflection[inflection.modification == modification]
            for name in names:  # a gaussian row has no lr (NaN): its curve does not depend on it
                if name in rows and rows[name].notna().any():
                    rows = rows[rows[name].isna() | np.isclose(rows[name].astype(float), float(getattr(cell, name)))]
            if len(rows):
                found.append(
                    {
                        "setup": setup,
                        "modification": modification,
                        "t_star": float(rows.value.iloc[0]),
                        "kind": str(rows.t_star_kind.iloc[0]),
                    }
                )
    return found


def store_overlay(path: Path | str) -> Overlay:
    """Load every run under ``path`` (``rundir.store``), fit each family as ``ovt compare`` does
    (point fit, ``n_boot`` 0), and collect theory runs' stored T*. ValueError naming the path when it
    holds no run, or ``path`` when it is not a path."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path={path!r} must be a path (str or pathlib.Path) to a result store")
    runs = store.find_runs(path) if Path(path).exists() else []
    if not runs:
        raise ValueError(f"store {path} holds no run directory (manifest.json + metrics.parquet)")
    fits, skipped, stored = [], [], []
    for run, name in zip(runs, store.run_names(runs)):
        frame = store.load(run)
        found, reasons = compare.families(frame, name)
        skipped += reasons
        for fam in found:
            reason = fittable(fam, None)
            if reason:
                skipped.append(reason)
                continue
            fits.append(compare.fit_family(fam, 0, 0, None, D))
        stored += _stored_rows(run, frame)
    columns = ["setup", "modification", "t_star", "kind"]
    return Overlay(str(path), fits, skipped, pd.DataFrame(stored, columns=columns))

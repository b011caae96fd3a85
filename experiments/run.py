"""Run a theory preset into a result store: manifest, resumable chunks, the final table.

The one place where theory sweeps meet the disk, the terminal and the clock.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import pandas as pd

from experiments import store
from experiments.config import TheoryConfig, cells, to_dict


class UsageError(ValueError):
    """Bad input: the CLI prints the message on one line and exits with 2."""


def check_writable(out: Path) -> None:
    """Refuse an --out that is a file, or under which nothing can be created, before writing anything:
    a probe file in the nearest existing ancestor is created and removed."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory")
    probe = out
    while not probe.exists():
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is not a directory")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise UsageError(f"--out {out} is not writable ({err.strerror or err})") from None


def versions() -> dict[str, str]:
    names = ("jax", "jaxlib", "flax", "optax", "numpy", "pandas", "torch", "transformers")
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _device_mesh():
    import jax

    devices = jax.devices()
    if len(devices) == 1:
        return None, 1
    return jax.sharding.Mesh(devices, ("cells",)), len(devices)


def run_theory(cfg: TheoryConfig, preset: str, out: Path, quiet: bool = False,
               only_chunks: list[int] | None = None) -> pd.DataFrame | None:
    """Run every (or only the listed) chunks of ``cfg`` into ``out``; finish the table when all are stored.

    Returns the final table, or None when chunks remain (a cluster job that ran only some of them).
    """
    import jax
    from tqdm import tqdm

    from experiments import theory_run

    out = Path(out)
    check_writable(out)
    manifest_path = out / store.MANIFEST
    config = json.loads(json.dumps(to_dict(cfg)))  # as it reads back from manifest.json (tuples -> lists)
    if manifest_path.is_file():
        previous = store.read_manifest(out)
        if previous.get("config") != config or previous.get("preset") != preset:
            raise UsageError(f"--out {out} holds a run of another config (preset {previous.get('preset')!r}); "
                             "choose another --out or delete it")
        manifest = previous
    else:
        manifest = {
            "preset": preset, "source": "theory", "config": config, "versions": versions(),
            "git_commit": git_commit(), "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "dtype": "float64" if jax.config.jax_enable_x64 else "float32",
            "seeds": sorted({c.seed for c in cells(cfg)}), "started": now(), "status": "running",
        }
    mesh, n_devices = _device_mesh()
    chunks = theory_run.plan(cfg, n_devices)
    manifest.update(n_cells=len(cells(cfg)), n_chunks=len(chunks), chunk_size=len(chunks[0].cells))
    store.write_json(manifest_path, manifest)

    grid_fields = tuple(n for n, _ in cfg.grid)
    done = store.stored_chunks(out)
    todo = [c for c in chunks if c.index not in done and (only_chunks is None or c.index in only_chunks)]
    for chunk in tqdm(todo, desc=f"theory {preset}", unit="chunk", disable=quiet, file=sys.stderr):
        rows = theory_run.run_chunk(chunk, preset, grid_fields, mesh)
        store.write_table(store.chunk_path(out, chunk.index), rows)
    if len(store.stored_chunks(out)) < len(chunks):
        return None
    table = theory_run.finalize(store.read_chunks(out), cfg)
    store.write_table(out / store.METRICS, table)
    manifest.update(status="complete", finished=now())
    store.write_json(manifest_path, manifest)
    return table


def chunk_count(cfg: TheoryConfig) -> int:
    from experiments import theory_run

    return len(theory_run.plan(cfg))

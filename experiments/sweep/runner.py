"""Run a theory preset into a result store: manifest, resumable chunks, the final table.

The sweep's side of the run directory (``rundir.lifecycle`` holds the rest): chunks of cells computed
in order (``experiments.sweep.compute``), each stored as it finishes, the table written when all are.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from experiments.sweep.config import TheoryConfig, cells, to_dict
from rundir import store
from rundir.lifecycle import (
    UsageError,
    begin_run,
    check_writable,
    complete_run,
    git_commit,
    jsonable,
    marks_failure,
    now,
    out_decision,
    versions,
)


def _device_mesh():
    import jax

    devices = jax.devices()
    if len(devices) == 1:
        return None, 1
    return jax.sharding.Mesh(devices, ("cells",)), len(devices)


def run_theory(
    cfg: TheoryConfig, preset: str, out: Path, quiet: bool = False, only_chunks: list[int] | None = None
) -> pd.DataFrame | None:
    """Run every (or only the listed) chunks of ``cfg`` into ``out``; finish the table when all are stored.

    Returns the final table, or None when chunks remain (a cluster job that ran only some of them).
    """
    import jax

    from experiments.sweep import compute

    out = Path(out)
    check_writable(out)
    manifest_path = out / store.MANIFEST
    identity = {"preset": preset, "config": to_dict(cfg)}
    mesh, n_devices = _device_mesh()
    chunks = compute.plan(cfg, n_devices)
    check_chunks(only_chunks, len(chunks))
    out_decision(out, identity)  # refuse before anything is written

    def fresh():
        return {
            **jsonable(identity),
            "source": "theory",
            "versions": versions(),
            "git_commit": git_commit(),
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "dtype": "float64" if jax.config.jax_enable_x64 else "float32",
            "seeds": sorted({c.seed for c in cells(cfg)}),
            "started": now(),
            "status": "running",
        }

    with marks_failure(out):
        manifest = begin_run(out, identity, fresh, lock=only_chunks is None)
        manifest.update(n_cells=len(cells(cfg)), n_chunks=len(chunks), chunk_size=len(chunks[0].cells))
        store.write_json(manifest_path, manifest)
        return _compute(cfg, preset, out, manifest, chunks, mesh, quiet, only_chunks)


def check_chunks(only_chunks: list[int] | None, n_chunks: int) -> None:
    """``--chunk`` indices must name chunks of this sweep."""
    for index in only_chunks or ():
        if not 0 <= index < n_chunks:
            raise UsageError(f"--chunk {index} is not a chunk of this sweep; allowed: 0..{n_chunks - 1}")


def _compute(cfg, preset, out, manifest, chunks, mesh, quiet, only_chunks):
    from tqdm import tqdm

    from experiments.sweep import compute
    from experiments.sweep.rows import finalize

    manifest_path = out / store.MANIFEST
    grid_fields = tuple(n for n, _ in cfg.grid)
    done = store.stored_chunks(out)
    todo = [c for c in chunks if c.index not in done and (only_chunks is None or c.index in only_chunks)]
    for chunk in tqdm(todo, desc=f"theory {preset}", unit="chunk", disable=quiet, file=sys.stderr):
        rows = compute.run_chunk(chunk, preset, grid_fields, mesh)
        store.write_table(store.chunk_path(out, chunk.index), rows)
    if len(store.stored_chunks(out)) < len(chunks):
        manifest.update(status="partial")  # a cluster job's share is done; the others finish the table
        store.write_json(manifest_path, manifest)
        return None
    return complete_run(out, manifest, finalize(store.read_chunks(out), cfg))


def chunk_count(cfg: TheoryConfig) -> int:
    from experiments.sweep import compute

    return len(compute.plan(cfg))

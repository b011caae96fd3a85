"""The run directory's lifecycle, shared by theory sweeps, LLM runs and studies.

``out_decision`` (while planning: new, resume or replace; reads only), ``claim`` (the lock),
``begin_run`` (the manifest written, status running), ``marks_failure`` (around the work: failed or
interrupted, with the reason) and ``complete_run`` (the final table, then status complete). Bad input
is a ``UsageError``: the CLI prints it on one line and exits with 2.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import pandas as pd

from rundir import store
from rundir.store import safe_name


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


# ------------------------------------------------------------------------------ run lifecycle
# A run directory's manifest says what it holds and how far it got: ``status`` is "running" while a
# command works in it, "complete" when metrics.parquet is final, "failed" (with ``error``) when the
# command stopped on an exception, "interrupted" after Ctrl-C. The same command resumes any of them;
# another config may replace a run that holds nothing of value (failed, or running with no chunk
# stored: killed before its first result), and is refused by a run with results.


def jsonable(payload):
    """``payload`` as it reads back from a manifest (tuples -> lists, NumPy scalars -> numbers)."""
    return json.loads(json.dumps(payload, default=store._json_default))


def path_from_run(path: Path | str, out: Path | str) -> str:
    """``path`` relative to the run directory ``out``: what a manifest records, so that a results tree
    can move (or be committed) without naming the machine it was made on."""
    return os.path.relpath(Path(path).resolve(), Path(out).resolve())


def variant_dir(base: Path, quick: bool, overrides: list[str]) -> Path:
    """``base`` for a preset as it stands, and a sibling of its own for every variant
    (``base-depth=3_lr=0.01,0.04``, ``base-quick``), so a variant never meets the preset's run, nor
    another variant's; a long name becomes a stable digest."""
    suffix = (["quick"] if quick else []) + sorted(item.strip() for item in overrides)
    name = base.name + ("-" + "_".join(suffix) if suffix else "")
    name = safe_name(name)
    if len(name) > 100:  # long grids: a stable digest keeps the name short and unique
        name = f"{base.name}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return base.with_name(name)


def same_config(stored, current, defaults: dict | None = None) -> bool:
    """Whether a stored identity value matches the current one: equal, or, for two configs, equal once
    a key that one of them lacks is read at its declared default in ``defaults`` (a field added since
    the run was written, or one a version left out at its default, holds its default there)."""
    if not (defaults and isinstance(stored, dict) and isinstance(current, dict)):
        return stored == current
    missing = object()
    return all(
        stored.get(key, defaults.get(key, missing)) == current.get(key, defaults.get(key, missing))
        for key in stored.keys() | current.keys()
    )


def out_decision(out: Path, identity: dict, defaults: dict | None = None) -> str:
    """What a run with ``identity`` (manifest fields that must match to resume, e.g. command and
    config) does in ``out``: "new", "resume" or "replace". ``defaults``: the declared defaults of the
    config's fields (``same_config``). Reads only; refuses with UsageError."""
    out = Path(out)
    if not (out / store.MANIFEST).is_file():
        if store.stored_chunks(out):
            raise UsageError(f"--out {out} holds chunks/ but no {store.MANIFEST}; choose another --out or delete it")
        return "new"
    previous = store.read_manifest(out)
    if all(
        same_config(previous.get(key), jsonable(value), defaults if key == "config" else None)
        for key, value in identity.items()
    ):
        return "resume"
    status = previous.get("status")
    if status == "failed" or (status in ("running", "interrupted") and not store.stored_chunks(out)):
        return "replace"
    what = ", ".join(f"{key} {previous.get(key)!r}" for key in identity if key != "config")
    raise UsageError(
        f"--out {out} holds a {status or 'unfinished'} run of another config ({what}); "
        "choose another --out or delete it"
    )


def clear_run(out: Path) -> None:
    """Remove a replaced run's manifest, chunks and table (nothing else in ``out``)."""
    out = Path(out)
    shutil.rmtree(out / store.CHUNKS, ignore_errors=True)
    for name in (store.METRICS, store.MANIFEST):
        (out / name).unlink(missing_ok=True)


LOCK = ".ovt-lock"  # in a run directory while a command works in it: {"pid", "host", "started"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def claim(out: Path) -> None:
    """Lock the run directory ``out`` for this process before its first write: a lock held by another
    live process on this machine (or by one on another machine, which cannot be asked) is refused with
    a UsageError naming it; one left by a process that no longer runs is taken over, said on stderr;
    this process' own is kept. ``release`` removes it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path, host = out / LOCK, platform.node()
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
                pid, their_host = int(holder["pid"]), str(holder["host"])
            except (OSError, ValueError, KeyError, TypeError):
                holder, pid, their_host = {}, -1, host  # unreadable: a writer killed mid-write
            if their_host == host and pid == os.getpid():
                return
            if their_host != host or _alive(pid):
                since = holder.get("started", "an unknown time")
                raise UsageError(
                    f"--out {out} is in use by process {pid} on {their_host} since {since}; wait for it to end "
                    f"or give another --out (a lock left by a crash: remove {path})"
                ) from None
            print(f"ovt: taking over {out} from process {pid}, which no longer runs", file=sys.stderr)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump({"pid": os.getpid(), "host": host, "started": now()}, handle)
        return


def release(out: Path) -> None:
    """Remove this process' lock on ``out`` (``claim``), if it holds one."""
    path = Path(out) / LOCK
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        holder = json.loads(path.read_text())
        if int(holder["pid"]) == os.getpid() and holder["host"] == platform.node():
            path.unlink()


def begin_run(out: Path, identity: dict, fresh, lock: bool = True, defaults: dict | None = None) -> dict:
    """The run's manifest, marked running and written: the stored one on a resume (noted under
    ``resumed``), else ``fresh()`` (after clearing a replaced run, said on stderr even when quiet:
    results are being removed). ``lock``: ``claim`` the directory first (a cluster job's share does not;
    its chunks are its own). ``defaults``: as ``out_decision`` reads them."""
    out = Path(out)
    decision = out_decision(out, identity, defaults)
    if lock:
        claim(out)
    if decision == "resume":
        manifest = store.read_manifest(out)
        manifest.setdefault("resumed", []).append(now())
        manifest["status"] = "running"
        manifest.pop("error", None)
    else:
        if decision == "replace":
            previous = store.read_manifest(out).get("status")
            clear_run(out)
            print(f"ovt: replacing the {previous} run of another config in {out}", file=sys.stderr)
        manifest = fresh()
    try:
        store.write_json(out / store.MANIFEST, manifest)
    except BaseException:  # a full disk before the run began: the stored status still holds
        if lock:
            release(out)
        raise
    return manifest


def complete_run(out: Path, manifest: dict, table: pd.DataFrame) -> pd.DataFrame:
    """The end of every run, theory and LLM: the final table written (atomically) as
    ``metrics.parquet``, then the manifest marked complete with the time and the row count."""
    store.write_table(Path(out) / store.METRICS, table)
    manifest.update(status="complete", finished=now(), n_rows=len(table))
    store.write_json(Path(out) / store.MANIFEST, manifest)
    release(out)
    return table


@contextlib.contextmanager
def marks_failure(out: Path):
    """Mark ``out``'s manifest "failed" (with the reason) or "interrupted" if the block raises, then re-raise."""
    try:
        yield
    except BaseException as error:
        path = Path(out) / store.MANIFEST
        with contextlib.suppress(Exception):
            manifest = store.read_manifest(out) if path.is_file() else None
            if manifest is not None and manifest.get("status") == "running":
                interrupted = isinstance(error, KeyboardInterrupt)
                manifest.update(status="interrupted" if interrupted else "failed", stopped=now())
                if not interrupted:
                    manifest["error"] = f"{type(error).__name__}: {error}"
                store.write_status(path, manifest)
        release(out)
        raise


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
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

"""How tests end a run the ways a run can end: a full disk (a small tmpfs), SIGTERM and SIGINT.

The full disk is real: a tmpfs of a few KiB mounted over a folder, so the writers meet ENOSPC from
the kernel exactly where a user's would, and ``grow`` frees space (a remount keeps the files) for
the same command to resume. Mounting needs root (CAP_SYS_ADMIN), which the project's CI has; where
it is refused the test is skipped with that reason.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from rundir import store

# The one stderr line each way of ending prints (experiments/cli.py), with its exit code.
ENDINGS = {
    signal.SIGTERM: (143, "ovt: terminated (SIGTERM); rerun the same command to resume"),
    signal.SIGINT: (130, "ovt: interrupted; rerun the same command to resume"),
}


@dataclass(frozen=True)
class SmallDisk:
    path: Path

    def grow(self, kib: int) -> None:
        """Free space without losing what was written (a tmpfs remount keeps its files)."""
        subprocess.run(["mount", "-o", f"remount,size={kib}k", str(self.path)], check=True, capture_output=True)


@contextlib.contextmanager
def small_disk(path: Path, kib: int):
    """A ``kib`` KiB tmpfs mounted at ``path`` for the block; unmounted after it."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"a full disk needs a tmpfs mount, refused here: {mounted.stderr.decode().strip()}")
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def start(command: list[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` with SIGINT at its default in the child: a shell's background job
    (``make test &``, ``nohup``) starts with SIGINT ignored, its children inherit an ignored signal,
    and Python keeps it ignored, so Ctrl-C could not reach the run under test. A handler (unlike
    "ignore") is reset to the default at exec, so this process holds one while the child starts;
    no ``preexec_fn``, which would fork a multithreaded (JAX) process."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(command, **kwargs)
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def interrupt_when(proc: subprocess.Popen, reached, sig: signal.Signals, timeout: float = 900.0) -> list[str]:
    """Send ``sig`` to ``proc`` (the command alone, as a scheduler or a terminal does) as soon as
    ``reached()``; assert it exits with that signal's code; return its stderr lines."""
    start = time.monotonic()
    while not reached():
        assert proc.poll() is None, "the run ended before the signal could land mid-run"
        assert time.monotonic() - start < timeout
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == ENDINGS[sig][0], err
    return err.strip().splitlines()


def a_chunk_more(out: Path):
    """A condition: ``out`` holds one stored chunk more than now (the run has made progress)."""
    done = len(store.stored_chunks(out))
    return lambda: len(store.stored_chunks(out)) > done

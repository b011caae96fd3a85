"""Tiny OLMo checkpoints on disk, as a folder series and as an offline Hugging Face hub cache.

The builders are plain functions so other test modules can make their own series; the fixtures
below wrap them. Every model is a ``tiny`` preset with a byte-level BPE tokenizer trained here, so
nothing is downloaded and each checkpoint loads in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Mapping
from pathlib import Path

import huggingface_hub.constants
import pytest
from transformers import OlmoForCausalLM, PreTrainedTokenizerFast

from llm_validation.models import build_model, olmo_config
from llm_validation.revisions import format_revision
from llm_validation.tokenizer import train_bpe_tokenizer

WORDS = (
    "the a model token weight noise step loss data train test small large early late learn "
    "forget tune sharp flat curve point value layer norm head text word line read write"
).split()
# (step, exact tokens) -> names step10-tokens1K, step20-tokens2K, step40-tokens5K.
SERIES_POINTS = ((10, 1000), (20, 2000), (40, 5000))
HUB_REPO = "test-org/tiny-olmo"


def tiny_corpus(n_lines: int = 200, seed: int = 0) -> list[str]:
    """Deterministic pseudo-English lines from a small vocabulary."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "." for _ in range(n_lines)]


def make_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    return train_bpe_tokenizer(tiny_corpus(), vocab_size)


def make_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0, preset: str = "tiny") -> OlmoForCausalLM:
    return build_model(olmo_config(preset, vocab_size=len(tokenizer)), seed)


def save_checkpoint(
    folder: Path, model: OlmoForCausalLM, tokenizer: PreTrainedTokenizerFast, step: int, tokens: int
) -> Path:
    """A ``save_pretrained`` folder with its tokenizer and a ``checkpoint.json`` holding the exact counts."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "checkpoint.json").write_text(json.dumps({"step": step, "tokens": tokens}))
    return folder


def write_folder_series(
    root: Path, tokenizer: PreTrainedTokenizerFast, points: tuple[tuple[int, int], ...] = SERIES_POINTS, seed: int = 0
) -> dict[str, int]:
    """One checkpoint per (step, tokens), each with its own weights; returns {revision name: model seed}."""
    seeds = {}
    for index, (step, tokens) in enumerate(points):
        name = format_revision(step, tokens)
        seeds[name] = seed + index + 1
        save_checkpoint(root / name, make_model(tokenizer, seeds[name]), tokenizer, step, tokens)
    return seeds


def write_hub_cache(cache: Path, repo_id: str, folders: Mapping[str, Path]) -> Path:
    """Lay out ``{revision: folder}`` as the hub cache does: ``refs/REV`` -> hash, ``snapshots/HASH/...``."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    for revision, folder in folders.items():
        commit = hashlib.sha1(revision.encode()).hexdigest()
        (repo_dir / "refs" / revision).write_text(commit)
        shutil.copytree(folder, repo_dir / "snapshots" / commit)
    return repo_dir


def use_offline_cache(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """Point the hub cache at ``home/hub`` and go offline, for the env and the already-imported constants."""
    cache = home / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    for variable, value in (("HF_HOME", home), ("HF_HUB_CACHE", cache), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(variable, str(value))
    # huggingface_hub reads these once at import; transformers looks them up on every call.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HOME", str(home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def empty_offline_cache(monkeypatch, tmp_path):
    """An empty offline hub cache, so no test reads the machine's cache or the network."""
    return use_offline_cache(monkeypatch, tmp_path / "hf")


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture(scope="session")
def folder_series(tmp_path_factory, tokenizer) -> tuple[Path, dict[str, int]]:
    """(root, {revision: model seed}) of the three-checkpoint folder series; treat as read-only."""
    root = tmp_path_factory.mktemp("series")
    return root, write_folder_series(root, tokenizer)


@pytest.fixture
def hub_cache(monkeypatch, tmp_path, folder_series) -> str:
    """The folder series as hub repo ``HUB_REPO`` in an offline cache (plus a ``main`` ref); returns the repo id."""
    root, seeds = folder_series
    cache = use_offline_cache(monkeypatch, tmp_path / "hf")
    folders = {name: root / name for name in seeds} | {"main": root / list(seeds)[-1]}
    write_hub_cache(cache, HUB_REPO, folders)
    return HUB_REPO

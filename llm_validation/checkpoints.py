"""Checkpoint series: revision names, known hub series, listing, nearest-token selection, loading.

A checkpoint is addressed by a model (a hub id such as ``allenai/OLMo-1B-hf``, or a local folder
whose subfolders are ``save_pretrained`` folders) and a revision (a hub branch, or a subfolder
name). Revision names carry the pre-training position; the supported families are

- ``step{N}-tokens{M}{K|M|B|T}`` (no unit below 1000 tokens): OLMo-1B-hf, OLMo-1B-0724-hf, and the
  local series written here;
- ``stage1-step{N}-tokens{M}B`` and ``stage2-ingredient{K}-step{N}-tokens{M}B``: OLMo-2 (stage-2
  token counts restart at zero: compare revisions within one stage only; in an OLMo-2 suite an
  unprefixed ``step{N}-tokens{M}B``, as some early 7B branches are named, is stage 1);
- ``ckpt_{NNN}``: LLM360 Amber, 360 checkpoints over ~1.26T tokens;
- ``step{N}``: Pythia, tokens = N x 2,097,152;
- ``step-{N}``: SmolLM2 intermediate checkpoints, tokens = N x the suite's batch in tokens.

The last two carry no token count: it comes from the suite registry (``suites``), so
``parse_revision`` takes the model. Revisions are listed, never built from a pattern.

A local series folder is written and read here (``pretrain`` trains into it):

    DIR/series.json          {"config": the series' PretrainConfig as JSON, "versions": ...}
    DIR/tokenizer/           the series' tokenizer, trained once
    DIR/REVISION/            one checkpoint: save_pretrained weights and tokenizer, and ``checkpoint.json``
                             (exact ``step`` and ``tokens``, schedule, losses, provenance)

Any folder of ``save_pretrained`` subfolders named as revisions is a series too (``checkpoint.json``
optional). Every file is written to a temporary name and renamed into place, so a killed writer
leaves the old version or the new one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

import httpx2
import torch
import transformers
from huggingface_hub import constants, list_repo_refs
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from llm_validation import suites
from llm_validation.models import count_parameters
from llm_validation.pretrain_config import CHECKPOINT_FILE, SERIES_FILE, PretrainConfig, changed_fields, config_record
from llm_validation.revisions import Revision, parse_revision
from rundir.atomic import replaced
from rundir.store import write_json

TOKENIZER_FOLDER = "tokenizer"


class CheckpointError(ValueError):
    """A checkpoint that cannot be listed or loaded as asked (bad input: the CLI exits with 2)."""


# The known public series by hub id (``suites.Suite``: tokens per step, stage, init std, size).
SERIES = suites.SUITES


def nearest_revisions(available: Iterable[Revision], tokens_list: Iterable[float]) -> list[Revision]:
    """For each requested token count, the available revision nearest to it (ties: fewer tokens).

    Token counts are compared as given, so pass revisions of one stage only.
    """
    available = list(available)
    if not available:
        raise CheckpointError("no revisions to choose from")
    return [_by_distance(available, tokens)[0] for tokens in tokens_list]


def _by_distance(available: list[Revision], tokens: float) -> list[Revision]:
    return sorted(available, key=lambda r: (abs(r.tokens - tokens), r.tokens, r.step))


def list_revisions(model: str | os.PathLike) -> list[Revision]:
    """The checkpoint revisions of ``model``, sorted by (stage, tokens, step).

    ``model`` is a local folder (its subfolders named as revisions; a ``checkpoint.json`` with
    integer ``step`` and ``tokens`` gives the exact counts) or a hub id. A hub listing comes from
    ``list_repo_refs(model).branches`` and is cached as json under ``HF_HOME``; with
    ``HF_HUB_OFFLINE=1`` it is read from the hub cache's ``refs/`` folder, so only what can be
    loaded offline is listed. Names outside the revision families (``main``) are left out.
    """
    if Path(model).is_dir():
        folders = [folder for folder in Path(model).iterdir() if folder.is_dir() and _is_revision(folder.name)]
        revisions = [_local_revision(folder) for folder in folders]
    else:
        names = [name for name in _hub_branches(str(model)) if _is_revision(name)]
        revisions = [parse_revision(name, str(model)) for name in names]
    return sorted(revisions, key=lambda r: (r.stage or "", r.tokens, r.step))


def load_checkpoint(
    model: str | os.PathLike, revision: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (in eval mode, on ``device``) and tokenizer of one revision of a folder series or hub repo.

    Raises ``CheckpointError`` when the revision is absent (naming the nearest available ones), when
    files are corrupt, when loading reports missing, mismatched or newly initialised weights
    (transformers would otherwise return a randomly initialised model that looks like a checkpoint),
    when the file holds weights the model does not use (another architecture, renamed tensors: the
    weights transformers itself knows to skip, such as Pythia's causal-mask buffers, are not
    reported), and when a listed suite loads as another class than its family's.
    """
    _require_revision(model, revision)
    if Path(model).is_dir():
        source, kwargs = str(Path(model) / revision), {}
    else:
        source, kwargs = str(model), {"revision": revision}
    try:
        # Mismatched shapes are reported in `info` rather than raised, so one check below covers them;
        # transformers' own load report on stderr is silenced: that check says it in one line.
        with _transformers_quiet():
            loaded, info = AutoModelForCausalLM.from_pretrained(
                source, dtype=dtype, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
            )
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, SafetensorError) as error:
        raise CheckpointError(f"checkpoint {model}@{revision} could not be read: {error}") from error
    broken = sorted(info["missing_keys"]) + sorted(key for key, *_ in info["mismatched_keys"])
    if broken or info["error_msgs"]:
        raise CheckpointError(
            f"checkpoint {model}@{revision} is incomplete: weights missing or mismatched "
            f"(would be newly initialised): {', '.join(broken) or info['error_msgs']}"
        )
    if info["unexpected_keys"]:
        raise CheckpointError(
            f"checkpoint {model}@{revision} holds weights {type(loaded).__name__} does not use "
            f"(another architecture?): {', '.join(sorted(info['unexpected_keys']))}"
        )
    suite = SERIES.get(str(model))
    expected = suites.FAMILIES[suite.family].model_class if suite else type(loaded).__name__
    if type(loaded).__name__ != expected:
        raise CheckpointError(
            f"checkpoint {model}@{revision} loads as {type(loaded).__name__}; the {suite.family} suite is {expected}"
        )
    return loaded.to(device).eval(), tokenizer


def parameter_count(model: str | os.PathLike, revision: str) -> int:
    """Unique parameters (a tied embedding once) of the model one revision's config.json builds,
    counted on the meta device: no weights are read or allocated."""
    source, kwargs = (str(Path(model) / revision), {}) if Path(model).is_dir() else (str(model), {"revision": revision})
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"the config.json of {model}@{revision} could not be read: {error}") from error
    with torch.device("meta"):
        return count_parameters(AutoModelForCausalLM.from_config(config))


def _is_revision(name: str) -> bool:
    try:
        parse_revision(name)  # the form alone decides; the model only fills in counts
    except ValueError:
        return False
    return True


def _local_revision(folder: Path) -> Revision:
    revision = parse_revision(folder.name)
    metadata = folder / CHECKPOINT_FILE
    if not metadata.is_file():
        return revision
    try:
        fields = json.loads(metadata.read_text())
        return dataclasses.replace(revision, step=int(fields["step"]), tokens=int(fields["tokens"]))
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{metadata} is not valid: needs integer 'step' and 'tokens' ({error})") from error


def _hub_branches(repo: str) -> list[str]:
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise CheckpointError(f"model={repo!r} is neither a folder nor a hub id of the form ORG/NAME")
    repo_cache = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    if constants.is_offline_mode():
        refs = repo_cache / "refs"
        if not refs.is_dir():
            raise CheckpointError(f"HF_HUB_OFFLINE=1 and {repo} has no cached revisions under {refs}")
        return [ref.name for ref in refs.iterdir() if ref.is_file()]
    listing = Path(constants.HF_HOME) / "ovt" / "revisions" / f"{repo.replace('/', '--')}.json"
    try:
        names = [branch.name for branch in list_repo_refs(repo).branches]
    except (OSError, httpx2.HTTPError) as error:  # the hub's HTTP and connection errors: use the last listing
        if not listing.is_file():
            raise CheckpointError(f"cannot list the revisions of {repo}: {error}") from error
        return json.loads(listing.read_text())
    with replaced(listing) as temporary:  # a concurrent reader never sees half a listing
        temporary.write_text(json.dumps(sorted(names)))
    return names


def _require_revision(model: str | os.PathLike, revision: str) -> None:
    if Path(model).is_dir():
        present = (Path(model) / revision).is_dir()
    else:
        present = revision in _hub_branches(str(model))
    if present:
        return
    available = list_revisions(model)
    if _is_revision(revision) and available:
        nearest = _by_distance(available, parse_revision(revision, model).tokens)[:3]
        hint = f"nearest available: {', '.join(r.name for r in nearest)}"
    else:
        hint = f"available: {', '.join(r.name for r in available[:5]) or 'none'} ({len(available)} in all)"
    raise CheckpointError(f"revision={revision!r} is not available for {model}; {hint}")


def claim_series(out_dir: Path, config: PretrainConfig, versions: dict) -> None:
    """Write ``series.json``, or check that the folder already holds this very series (a
    ``separate`` or ``wsd`` one may gain budgets, a ``wsd`` one trunk checkpoints; ``series.json``
    then lists all of them)."""
    record = config_record(config)
    path = out_dir / SERIES_FILE
    if path.exists():
        stored = json.loads(path.read_text())["config"]
        changed = changed_fields(stored, record)
        if changed:
            raise ValueError(
                f"out_dir={str(out_dir)!r} holds a series with other {', '.join(changed)}; use a new folder"
            )
        trunk = max(int(stored.get("trunk_checkpoints", 0)), int(record.get("trunk_checkpoints", 0)))
        if set(record["budgets"]) <= set(stored["budgets"]) and trunk == int(stored.get("trunk_checkpoints", 0)):
            return
        record["budgets"] = sorted(set(stored["budgets"]) | set(record["budgets"]))
        record["trunk_checkpoints"] = trunk
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, {"config": record, "versions": versions})


def is_saved(out_dir: Path, revision: str) -> bool:
    """A finished checkpoint: its ``checkpoint.json`` is written last, inside the renamed folder."""
    return (out_dir / revision / CHECKPOINT_FILE).exists()


def saved_tokenizer(out_dir: Path) -> PreTrainedTokenizerBase | None:
    """The series' stored tokenizer, or None before it is trained."""
    folder = out_dir / TOKENIZER_FOLDER
    return AutoTokenizer.from_pretrained(folder) if folder.exists() else None


def save_tokenizer(out_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    with replaced(out_dir / TOKENIZER_FOLDER, folder=True) as tmp:
        tokenizer.save_pretrained(tmp)


def save_checkpoint(out_dir: Path, revision: str, model, tokenizer, record: dict) -> None:
    """One checkpoint folder: weights, tokenizer and ``record`` as ``checkpoint.json``."""
    with replaced(out_dir / revision, folder=True) as tmp:
        with _transformers_bars_off():
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / CHECKPOINT_FILE, record)


@contextlib.contextmanager
def _transformers_quiet():
    """transformers' warnings off (its load report of missing or tied weights), restored after."""
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.utils.logging.set_verbosity(verbosity)


@contextlib.contextmanager
def _transformers_bars_off():
    """``save_pretrained`` draws a one-shard bar per checkpoint, which would break through a caller's."""
    enabled = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers.utils.logging.enable_progress_bar()

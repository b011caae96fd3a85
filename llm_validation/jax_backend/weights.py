"""A checkpoint's files and its safetensors as arrays, without torch.

Where: a revision of a local folder series is the subfolder ``DIR/REVISION``; a hub revision is the
snapshot ``huggingface_hub.snapshot_download`` resolves (the offline cache under ``HF_HUB_OFFLINE=1``),
the same files ``transformers.from_pretrained`` reads on the torch path. What: ``model.safetensors``
or the shards a ``model.safetensors.index.json`` lists; every tensor the architecture needs must be
there with its shape, and nothing else may be (a tied checkpoint may repeat the embedding as
``lm_head.weight``, bit for bit), or loading fails naming the tensors. A checkpoint saved only as
``pytorch_model.bin`` is refused: reading it would need torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax.numpy as jnp
from safetensors import SafetensorError, safe_open

from llm_validation.jax_backend.model import parameter_shapes
from llm_validation.jax_backend.spec import OlmoSpec

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
ALLOW = ["*.json", "*.safetensors"]  # all a JAX load reads from a hub snapshot


class WeightsError(ValueError):
    """A checkpoint whose weights are absent, unreadable, incomplete or of another shape."""


def checkpoint_folder(source: str | os.PathLike, revision: str, is_folder: bool) -> Path:
    """The folder holding ``revision``'s config.json and safetensors: a series subfolder or a hub snapshot."""
    if is_folder:
        folder = Path(source) / revision
        if not folder.is_dir():
            raise WeightsError(f"revision={revision!r} is not a folder of {source}")
        return folder
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(source), revision=revision, allow_patterns=ALLOW))
    except OSError as error:  # the hub's not-found and HTTP errors are OSErrors
        raise WeightsError(f"checkpoint {source}@{revision} could not be found: {error}") from None


def _shard_files(folder: Path) -> list[Path]:
    if (folder / INDEX).is_file():
        try:
            weight_map = json.loads((folder / INDEX).read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as error:
            raise WeightsError(f"{folder / INDEX} is not a safetensors index ({error})") from None
        return [folder / name for name in sorted(set(weight_map.values()))]
    if (folder / WEIGHTS).is_file():
        return [folder / WEIGHTS]
    torch_only = (folder / "pytorch_model.bin").exists()
    hint = "; it holds pytorch_model.bin, which only --backend torch reads" if torch_only else ""
    raise WeightsError(f"{folder} has no {WEIGHTS} or {INDEX}{hint}")


def read_safetensors(path: Path) -> dict[str, jnp.ndarray]:
    """Every tensor of one file as a JAX array (safetensors' flax reader: bfloat16 included)."""
    try:
        with safe_open(path, framework="flax") as file:
            return {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path} could not be read: {error}") from None


def load_weights(folder: Path, spec: OlmoSpec, dtype) -> dict[str, jnp.ndarray]:
    """{checkpoint name: array in ``dtype``} of every tensor ``spec`` needs; ``WeightsError`` naming any
    missing, unexpected or misshapen tensor."""
    tensors: dict[str, jnp.ndarray] = {}
    for path in _shard_files(folder):
        tensors.update(read_safetensors(path))
    shapes = parameter_shapes(spec)
    if spec.tie_word_embeddings and "lm_head.weight" in tensors:
        head = tensors.pop("lm_head.weight")
        embedding = tensors.get("model.embed_tokens.weight")
        if embedding is None or not bool(jnp.array_equal(head, embedding)):
            raise WeightsError(f"{folder}: tie_word_embeddings is true but lm_head.weight differs from the embedding")
    missing = sorted(set(shapes) - set(tensors))
    unexpected = sorted(set(tensors) - set(shapes))
    misshapen = sorted(name for name in set(shapes) & set(tensors) if tuple(tensors[name].shape) != shapes[name])
    if missing or unexpected or misshapen:
        parts = [
            f"{label}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("misshapen", misshapen))
            if names
        ]
        raise WeightsError(f"{folder} does not match its config.json: {'; '.join(parts)}")
    return {name: tensors[name].astype(dtype) for name in shapes}

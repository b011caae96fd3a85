"""An OLMo-1 checkpoint's architecture, read from its ``config.json`` as plain JSON.

Supported: ``model_type`` ``olmo`` (transformers' ``OlmoForCausalLM``: OLMo-1B-hf, OLMo-1B-0724-hf,
OLMo-7B-hf and the local series ``ovt llm pretrain`` writes): parameter-free layer norm, SwiGLU,
rotary embeddings of the ``default`` type, optional q/k/v clipping (``clip_qkv``), optional attention
biases, grouped key/value heads, tied or untied output. Anything else (OLMo-2's RMSNorm and QK-norm,
LLaMA-style models such as Amber, another activation or rotary scaling) is refused by name, never
approximated.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path


class SpecError(ValueError):
    """A checkpoint the JAX backend cannot read or does not implement (bad input)."""


@dataclasses.dataclass(frozen=True)
class OlmoSpec:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    rope_theta: float
    initializer_range: float
    tie_word_embeddings: bool
    attention_bias: bool = False
    clip_qkv: float | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def spec_from_config(config: dict, where: str = "config.json") -> OlmoSpec:
    """The ``OlmoSpec`` of a ``config.json`` dict; ``SpecError`` naming the field for anything unsupported."""
    model_type = config.get("model_type")
    if model_type != "olmo":
        raise SpecError(
            f"{where}: model_type={model_type!r} is not implemented by the JAX backend; allowed: 'olmo' "
            "(OLMo-1; use --backend torch for other families)"
        )
    if config.get("hidden_act", "silu") != "silu":
        raise SpecError(f"{where}: hidden_act={config['hidden_act']!r} is not implemented; allowed: 'silu'")
    # transformers 5 writes rope_parameters; older hub configs have rope_theta and rope_scaling.
    rope = config.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", "default")
    scaling = config.get("rope_scaling")
    if rope_type != "default" or scaling:
        raise SpecError(f"{where}: rotary scaling {scaling or rope_type!r} is not implemented; allowed: default")
    try:
        heads = int(config["num_attention_heads"])
        return OlmoSpec(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            intermediate_size=int(config["intermediate_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(config.get("num_key_value_heads") or heads),
            max_position_embeddings=int(config["max_position_embeddings"]),
            rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
            initializer_range=float(config.get("initializer_range", 0.02)),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            attention_bias=bool(config.get("attention_bias", False)),
            clip_qkv=None if config.get("clip_qkv") is None else float(config["clip_qkv"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise SpecError(f"{where}: field {error} is missing or not a number") from None


def read_spec(folder: str | Path) -> OlmoSpec:
    """The ``OlmoSpec`` of a checkpoint folder's ``config.json``."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SpecError(f"{path} could not be read as JSON: {error}") from None
    return spec_from_config(config, str(path))


def spec_of_preset(fields: dict, **overrides) -> OlmoSpec:
    """An ``OlmoSpec`` from the fields of a ``llm_validation.models.PRESETS`` entry, as ``olmo_config``
    builds it (tied embeddings, init std 0.02, rotary theta 10000)."""
    config = {"model_type": "olmo", "tie_word_embeddings": True, **fields, **overrides}
    return spec_from_config(config, "preset")

"""OLMo-architecture model presets built from ``transformers.OlmoConfig``.

One table of sizes serves the tests (``tiny``), the CPU-scale controlled pre-training (``smoke`` ...
``30m``) and the benchmarks. Parameter counts are for the default vocabulary of each preset and tied
embeddings; ``count_parameters`` gives the exact number for a built model. Every preset's default
vocabulary fits a byte-level BPE (>= 258 tokens), so each can be pre-trained as listed. torch and
transformers are imported by the functions that build models, so the table is cheap to read (the
command line checks ``--preset`` against it before importing torch).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: torch and transformers load when a model is built
    import torch
    from transformers import OlmoConfig, OlmoForCausalLM


@dataclasses.dataclass(frozen=True)
class ModelPreset:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int = 256


PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(32, 2, 4, 64, 320, 128),  # 30,720: unit tests
    "smoke": ModelPreset(32, 2, 4, 96, 512, 128),  # 43,008: seconds-long end-to-end runs
    "5k": ModelPreset(12, 1, 2, 32, 258, 512),  # 4,824: a byte-level model 4.2x below 20k (the study's small size)
    "20k": ModelPreset(24, 2, 2, 56, 320, 512),  # 20,352
    "50k": ModelPreset(40, 2, 4, 96, 384, 512),  # 51,200
    "100k": ModelPreset(48, 3, 4, 112, 512, 512),  # 100,608
    "200k": ModelPreset(64, 3, 4, 192, 512, 512),  # 192,512
    "1m": ModelPreset(128, 4, 4, 320, 2048, 512),  # 1,015,808
    "5m": ModelPreset(256, 6, 8, 512, 4096, 512),  # 4,980,736
    "30m": ModelPreset(512, 10, 8, 1024, 8192, 512),  # 30,408,704
}


def olmo_config(preset: str | ModelPreset, *, vocab_size: int | None = None, **overrides) -> OlmoConfig:
    """An ``OlmoConfig`` for a named preset; ``vocab_size`` overrides the preset's (e.g. a trained tokenizer's)."""
    from transformers import OlmoConfig

    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"preset={preset!r} is unknown; allowed: {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    fields = dataclasses.asdict(preset)
    if vocab_size is not None:
        fields["vocab_size"] = int(vocab_size)
    # OLMo-1 defaults (50279 etc.) fall outside a small vocabulary; point the special ids inside it.
    fields.update(tie_word_embeddings=True, pad_token_id=None, bos_token_id=None, eos_token_id=0)
    fields.update(overrides)
    return OlmoConfig(**fields)


def build_model(config: OlmoConfig, seed: int = 0) -> OlmoForCausalLM:
    """A freshly initialised model; the same seed gives bit-identical weights."""
    import torch
    from transformers import OlmoForCausalLM

    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = OlmoForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()


def count_parameters(model: torch.nn.Module) -> int:
    """Unique trainable parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())

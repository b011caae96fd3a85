"""The flax.nnx OLMo-1 against transformers' ``OlmoForCausalLM``: logits, weights read from the same
checkpoints (folder series, offline hub cache, a pre-trained series), and loud failures."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from llm_validation.jax_backend.model import OlmoForCausalLM, merge, parameter_names, random_weights, split
from llm_validation.jax_backend.spec import SpecError, read_spec, spec_from_config
from llm_validation.jax_backend.weights import WeightsError, checkpoint_folder, load_weights
from llm_validation.models import build_model, olmo_config
from llm_validation.pretrain import PretrainConfig, pretrain

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARITY = 1e-5  # max abs logit difference, float32

# A pre-trained tiny series: 8 and 16 AdamW steps of 4 x 32 tokens on Shakespeare.
PRETRAINED = PretrainConfig(
    preset="tiny", vocab_size=320, budgets=(1024, 2048), seq_len=32, batch_size=4, lr=3e-3, max_train_chars=60_000
)


@pytest.fixture(scope="session")
def pretrained_series(tmp_path_factory):
    """(folder, [revision folders]) of a tiny series trained by ``llm_validation.pretrain``."""
    folder = tmp_path_factory.mktemp("pretrained")
    return folder, pretrain(PRETRAINED, folder, progress=False, threads=1)


def jax_of(torch_model) -> OlmoForCausalLM:
    spec = spec_from_config(torch_model.config.to_dict())
    state = {k: jnp.asarray(v.detach().numpy()) for k, v in torch_model.state_dict().items()}
    if spec.tie_word_embeddings:
        state.pop("lm_head.weight")
    return OlmoForCausalLM(spec, state)


def max_logit_gap(torch_model, jax_model, tokens: np.ndarray) -> float:
    with torch.no_grad():
        expected = torch_model(torch.tensor(tokens)).logits.numpy()
    return float(np.abs(np.asarray(jax_model(jnp.asarray(tokens))) - expected).max())


def tokens_for(vocab: int, batch: int = 3, seq: int = 48) -> np.ndarray:
    return np.random.default_rng(1).integers(0, vocab, (batch, seq))


def test_tiny_preset_logits_equal_transformers():
    model = build_model(olmo_config("tiny"), seed=3)
    gap = max_logit_gap(model, jax_of(model), tokens_for(320))
    assert gap < PARITY, gap


def test_untied_grouped_clipped_and_biased_variants_equal_transformers():
    """Every OLMo-1 option the spec reads: an untied head, 2 key/value heads for 4 query heads, q/k/v
    clipping, attention biases (given nonzero values so they count)."""
    config = olmo_config("tiny", tie_word_embeddings=False, num_key_value_heads=2, clip_qkv=0.05, attention_bias=True)
    model = build_model(config, seed=4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    jax_model = jax_of(model)
    assert "lm_head.weight" in split(jax_model)[1]
    gap = max_logit_gap(model, jax_model, tokens_for(320))
    assert gap < PARITY, gap
    clipped = olmo_config("tiny", clip_qkv=1e-3)  # so tight that a missing clamp would show
    model = build_model(clipped, seed=5)
    assert max_logit_gap(model, jax_of(model), tokens_for(320)) < PARITY


def test_a_pretrained_checkpoint_loads_from_safetensors_and_equals_transformers(pretrained_series):
    from transformers import AutoModelForCausalLM

    _, folders = pretrained_series
    folder = folders[-1]
    torch_model = AutoModelForCausalLM.from_pretrained(folder).eval()
    spec = read_spec(folder)
    jax_model = OlmoForCausalLM(spec, load_weights(folder, spec, jnp.float32))
    gap = max_logit_gap(torch_model, jax_model, tokens_for(spec.vocab_size, 4, 32))
    assert gap < PARITY, gap
    # Trained, not a fresh init: the weights moved away from the init distribution's draw.
    assert not np.allclose(split(jax_model)[1]["model.embed_tokens.weight"], 0.0)
    torch_state = torch_model.state_dict()
    for name, value in split(jax_model)[1].items():
        assert np.array_equal(np.asarray(value), torch_state[name].numpy()), name


def test_the_offline_hub_cache_resolves_like_the_torch_path(hub_cache, folder_series):
    root, seeds = folder_series
    revision = list(seeds)[1]
    folder = checkpoint_folder(hub_cache, revision, is_folder=False)
    assert (folder / "model.safetensors").read_bytes() == (root / revision / "model.safetensors").read_bytes()
    assert checkpoint_folder(root, revision, is_folder=True) == root / revision
    with pytest.raises(WeightsError, match="step99-tokens9K"):
        checkpoint_folder(hub_cache, "step99-tokens9K", is_folder=False)


def test_bfloat16_checkpoints_load_bit_for_bit(tmp_path, tokenizer):
    model = build_model(olmo_config("tiny", vocab_size=len(tokenizer)), seed=6).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    spec = read_spec(tmp_path)
    weights = load_weights(tmp_path, spec, jnp.bfloat16)
    state = model.state_dict()
    for name, value in weights.items():
        assert value.dtype == jnp.bfloat16
        assert np.array_equal(np.asarray(value).view(np.uint16), state[name].view(torch.int16).numpy().view(np.uint16))
    logits = OlmoForCausalLM(spec, weights)(jnp.asarray(tokens_for(spec.vocab_size)))
    assert logits.dtype == jnp.bfloat16 and bool(jnp.isfinite(logits).all())


def _saved(tmp_path, tensors: dict, config: dict):
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_missing_unexpected_or_misshapen_tensors_fail_loudly(tmp_path):
    config = olmo_config("tiny").to_dict()
    spec = spec_from_config(config)
    good = {k: np.asarray(v) for k, v in random_weights(spec).items()}
    missing = dict(good)
    missing.pop("model.layers.1.mlp.up_proj.weight")
    (tmp_path / "a").mkdir()
    with pytest.raises(WeightsError, match=r"missing: model\.layers\.1\.mlp\.up_proj\.weight"):
        load_weights(_saved(tmp_path / "a", missing, config), spec, jnp.float32)
    extra = {**good, "model.layers.0.extra.weight": np.zeros(3, np.float32)}
    (tmp_path / "b").mkdir()
    with pytest.raises(WeightsError, match=r"unexpected: model\.layers\.0\.extra\.weight"):
        load_weights(_saved(tmp_path / "b", extra, config), spec, jnp.float32)
    wrong = {**good, "model.embed_tokens.weight": np.zeros((321, 32), np.float32)}
    (tmp_path / "c").mkdir()
    with pytest.raises(WeightsError, match=r"misshapen: model\.embed_tokens\.weight"):
        load_weights(_saved(tmp_path / "c", wrong, config), spec, jnp.float32)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(WeightsError, match="only --backend torch reads"):
        load_weights(tmp_path / "d", spec, jnp.float32)


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"model_type": "olmo2"}, "model_type='olmo2' is not implemented"),
        ({"model_type": "llama"}, "model_type='llama' is not implemented"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}, "rotary scaling"),
    ],
)
def test_unsupported_architectures_are_refused_by_name(tmp_path, change, needle):
    (tmp_path / "config.json").write_text(json.dumps({**olmo_config("tiny").to_dict(), **change}))
    with pytest.raises(SpecError, match=needle):
        read_spec(tmp_path)


def test_split_and_merge_name_every_tensor_as_the_checkpoint_does():
    spec = spec_from_config(olmo_config("tiny", tie_word_embeddings=False).to_dict())
    weights = random_weights(spec, seed=1)
    graphdef, params = split(OlmoForCausalLM(spec, weights))
    assert sorted(params) == sorted(parameter_names(spec)) == sorted(weights)
    tokens = jnp.asarray(tokens_for(320))
    assert jnp.array_equal(merge(graphdef, params)(tokens), OlmoForCausalLM(spec, weights)(tokens))

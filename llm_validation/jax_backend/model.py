"""OLMo-1 in flax.nnx, as transformers' ``OlmoForCausalLM`` computes it (float32 logits agree to 1e-5).

    h_0 = E[x],
    a_l = h_{l-1} + W_o Attn(RoPE(W_q n(h_{l-1})), RoPE(W_k n(h_{l-1})), W_v n(h_{l-1})),
    h_l = a_l + W_down (silu(W_gate n(a_l)) * W_up n(a_l)),
    logits = W_out n(h_L)      (W_out = E when the embedding is tied),

with n the layer norm without parameters (eps 1e-5, computed in float32) and causal softmax attention
(scores scaled by 1/sqrt(head_dim), softmax in float32). Weights keep transformers' layout ([out, in])
and names: the state path of every parameter, joined by dots, is its name in the checkpoint
(``model.layers.0.self_attn.q_proj.weight``), which is the name the noise is keyed by.

Float32 matmuls run at ``Precision.HIGHEST`` (a TPU would otherwise use bfloat16 passes for them);
bfloat16 weights use the device's default.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from llm_validation.jax_backend.spec import OlmoSpec

LAYER_NORM_EPS = 1e-5  # OlmoLayerNorm's, fixed (not a config field)


def _precision(dtype) -> jax.lax.Precision:
    return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else jax.lax.Precision.DEFAULT


def layer_norm(x: jax.Array) -> jax.Array:
    """(x - mean) / sqrt(var + eps) over the last axis, in float32, back in x's dtype."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS)).astype(x.dtype)


class Linear(nnx.Module):
    """y = x W^T (+ b), W of shape [out, in] as torch stores it."""

    def __init__(self, weight: jax.Array, bias: jax.Array | None = None):
        self.weight = nnx.Param(weight)
        self.bias = nnx.Param(bias) if bias is not None else None

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.weight[...]
        y = jnp.einsum("...i,oi->...o", x, w, precision=_precision(w.dtype))
        return y if self.bias is None else y + self.bias[...]


class Embedding(nnx.Module):
    def __init__(self, weight: jax.Array):
        self.weight = nnx.Param(weight)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return jnp.take(self.weight[...], tokens, axis=0)


def rotary(seq_len: int, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos and sin of position * theta^(-2i/d), duplicated over both halves: [seq_len, head_dim], float32."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = jnp.arange(seq_len, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x cos + rotate_half(x) sin for x [batch, seq, heads, head_dim], in float32, back in x's dtype."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    out = x * cos[:, None, :] + rotated * sin[:, None, :]
    return out.astype(x.dtype)


class Attention(nnx.Module):
    def __init__(self, spec: OlmoSpec, weights: dict[str, jax.Array], prefix: str):
        def linear(name):
            return Linear(weights[f"{prefix}.{name}.weight"], weights.get(f"{prefix}.{name}.bias"))

        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            linear(n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")
        )
        self.heads, self.kv_heads, self.head_dim = spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim
        self.clip_qkv = spec.clip_qkv

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        batch, seq, _ = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.clip_qkv is not None:
            q, k, v = (jnp.clip(t, -self.clip_qkv, self.clip_qkv) for t in (q, k, v))
        q = apply_rotary(q.reshape(batch, seq, self.heads, self.head_dim), cos, sin)
        k = apply_rotary(k.reshape(batch, seq, self.kv_heads, self.head_dim), cos, sin)
        v = v.reshape(batch, seq, self.kv_heads, self.head_dim)
        groups = self.heads // self.kv_heads
        k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
        precision = _precision(x.dtype)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=precision) * self.head_dim**-0.5
        causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))
        scores = jnp.where(causal, scores.astype(jnp.float32), -jnp.inf)
        probs = jax.nn.softmax(scores, axis=-1).astype(x.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v, precision=precision)
        return self.o_proj(out.reshape(batch, seq, self.heads * self.head_dim))


class MLP(nnx.Module):
    def __init__(self, weights: dict[str, jax.Array], prefix: str):
        self.gate_proj, self.up_proj, self.down_proj = (
            Linear(weights[f"{prefix}.{name}.weight"]) for name in ("gate_proj", "up_proj", "down_proj")
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
    def __init__(self, spec: OlmoSpec, weights: dict[str, jax.Array], prefix: str):
        self.self_attn = Attention(spec, weights, f"{prefix}.self_attn")
        self.mlp = MLP(weights, f"{prefix}.mlp")

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        x = x + self.self_attn(layer_norm(x), cos, sin)
        return x + self.mlp(layer_norm(x))


class OlmoModel(nnx.Module):
    def __init__(self, spec: OlmoSpec, weights: dict[str, jax.Array]):
        self.embed_tokens = Embedding(weights["model.embed_tokens.weight"])
        self.layers = nnx.List(
            [DecoderLayer(spec, weights, f"model.layers.{i}") for i in range(spec.num_hidden_layers)]
        )
        self.head_dim, self.rope_theta = spec.head_dim, spec.rope_theta

    def __call__(self, tokens: jax.Array) -> jax.Array:
        cos, sin = rotary(tokens.shape[1], self.head_dim, self.rope_theta)
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return layer_norm(x)


class OlmoForCausalLM(nnx.Module):
    """logits [batch, seq, vocab] of token ids [batch, seq], in the weights' dtype."""

    def __init__(self, spec: OlmoSpec, weights: dict[str, jax.Array]):
        self.model = OlmoModel(spec, weights)
        self.lm_head = None if spec.tie_word_embeddings else Linear(weights["lm_head.weight"])

    def __call__(self, tokens: jax.Array) -> jax.Array:
        hidden = self.model(tokens)
        if self.lm_head is not None:
            return self.lm_head(hidden)
        embedding = self.model.embed_tokens.weight[...]
        return jnp.einsum("bsh,vh->bsv", hidden, embedding, precision=_precision(embedding.dtype))


def parameter_names(spec: OlmoSpec) -> list[str]:
    """Every tensor the model holds, by checkpoint name (a tied output has none of its own)."""
    names = ["model.embed_tokens.weight"]
    for i in range(spec.num_hidden_layers):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            names.append(f"model.layers.{i}.self_attn.{proj}.weight")
            if spec.attention_bias:
                names.append(f"model.layers.{i}.self_attn.{proj}.bias")
        names += [f"model.layers.{i}.mlp.{proj}.weight" for proj in ("gate_proj", "up_proj", "down_proj")]
    if not spec.tie_word_embeddings:
        names.append("lm_head.weight")
    return names


def parameter_shapes(spec: OlmoSpec) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of ``parameter_names``."""
    h, kv = spec.hidden_size, spec.num_key_value_heads * spec.head_dim
    out = {"q_proj": h, "k_proj": kv, "v_proj": kv, "o_proj": h}
    inp = {"q_proj": h, "k_proj": h, "v_proj": h, "o_proj": h}
    mlp = {"gate_proj": (spec.intermediate_size, h), "up_proj": (spec.intermediate_size, h)}
    mlp["down_proj"] = (h, spec.intermediate_size)
    shapes = {}
    for name in parameter_names(spec):
        kind, leaf = name.split(".")[-2:]
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            shapes[name] = (spec.vocab_size, h)
        elif kind in mlp:
            shapes[name] = mlp[kind]
        else:
            shapes[name] = (out[kind], inp[kind]) if leaf == "weight" else (out[kind],)
    return shapes


def random_weights(spec: OlmoSpec, seed: int = 0, dtype=jnp.float32) -> dict[str, jax.Array]:
    """Weights as transformers initialises them: N(0, initializer_range^2) matrices, zero biases."""
    keys = jax.random.split(jax.random.key(seed), len(parameter_names(spec)))
    return {
        name: (
            spec.initializer_range * jax.random.normal(key, shape, jnp.float32)
            if name.endswith("weight")
            else jnp.zeros(shape, jnp.float32)
        ).astype(dtype)
        for key, (name, shape) in zip(keys, parameter_shapes(spec).items())
    }


def split(model: OlmoForCausalLM) -> tuple[nnx.GraphDef, dict[str, jax.Array]]:
    """(graphdef, {checkpoint name: array}): the model's structure and its parameters by name."""
    graphdef, state = nnx.split(model)
    return graphdef, {".".join(map(str, path)): value[...] for path, value in nnx.to_flat_state(state)}


def merge(graphdef: nnx.GraphDef, params: dict[str, jax.Array]) -> OlmoForCausalLM:
    """The model of ``split``'s graphdef with ``params`` (traced arrays inside jit/vmap are fine)."""
    flat = [(tuple(int(p) if p.isdigit() else p for p in name.split(".")), nnx.Param(v)) for name, v in params.items()]
    return nnx.merge(graphdef, nnx.from_flat_state(flat))

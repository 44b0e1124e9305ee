"""PaliGemma in Flax, structured like big_vision's `proj/paligemma`: SigLIP ViT -> linear projection -> Gemma.

The image tokens and the text prefix attend to each other fully, the answer (suffix) tokens causally: the
prefix-LM mask of big_vision, built here from transformers' `token_type_ids` (0 prefix, 1 answer). Parameter
names follow transformers' module names so that checkpoint conversion is a renaming (see weights.py).

`PaliGemma.__call__` takes the arrays of transformers' `PaliGemmaForConditionalGeneration.forward`; `prefill`
and `extend` run the decoder on a key/value cache for decoding (see decode.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from rls3_jax.vlm import attention

# A large negative instead of -inf keeps fully masked rows (padding queries) finite.
_MASKED = -2.3819763e38

_GELU_TANH = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_tanh")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """SigLIP ViT (transformers' SiglipVisionConfig defaults where a config.json leaves a field out)."""

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Gemma decoder (transformers' GemmaConfig defaults where a config.json leaves a field out)."""

    vocab_size: int = 256000
    hidden_size: int = 3072
    intermediate_size: int = 24576
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    head_dim: int = 256
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    final_logit_softcapping: float | None = None


@dataclasses.dataclass(frozen=True)
class PaliGemmaConfig:
    vision: VisionConfig
    text: TextConfig
    image_token_index: int = 256000
    pad_token_id: int = 0
    eos_token_id: int = 1
    bos_token_id: int = 2
    # Activations and matmuls run in `dtype` (parameters stay float32); "bfloat16" on accelerators.
    dtype: str = "float32"
    # k > 1: each k x k block of neighbouring patch tokens is concatenated into one before the projector (the
    # embedded model's fine patches at a quarter of the language model's sequence); checkpoints have 1.
    image_token_merge: int = 1

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_patches // self.image_token_merge**2

    def replace(self, **changes) -> PaliGemmaConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PaliGemmaConfig:
        d = dict(d)
        return cls(vision=VisionConfig(**d.pop("vision")), text=TextConfig(**d.pop("text")), **d)

    @classmethod
    def from_hf_config(cls, hf: dict, where: str = "config.json") -> PaliGemmaConfig:
        """Read a transformers PaliGemma config.json dict (4.x or 5.x)."""
        if hf.get("model_type") != "paligemma":
            raise ValueError(f"{where}: model_type is {hf.get('model_type')!r}, expected 'paligemma'")
        v, t = dict(hf.get("vision_config") or {}), dict(hf.get("text_config") or {})
        if v.get("model_type", "siglip_vision_model") != "siglip_vision_model":
            raise ValueError(f"{where}: vision_config.model_type is {v['model_type']!r}, expected a SigLIP vision model")
        if t.get("model_type", "gemma") != "gemma":
            raise ValueError(f"{where}: text_config.model_type is {t['model_type']!r}; only Gemma (PaliGemma 1) is supported")
        for key in ("image_size", "patch_size"):
            if isinstance(v.get(key), (list, tuple)):
                if v[key][0] != v[key][1]:
                    raise ValueError(f"{where}: non-square vision_config.{key} {v[key]} is not supported")
                v[key] = v[key][0]
        act = v.get("hidden_act", "gelu_pytorch_tanh")
        if act not in _GELU_TANH + ("gelu",):
            raise ValueError(f"{where}: vision_config.hidden_act {act!r} is not a GELU")
        vision = VisionConfig(**{f.name: v[f.name] for f in dataclasses.fields(VisionConfig) if f.name in v})
        rope = t.get("rope_parameters") or {}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"{where}: rope_type {rope['rope_type']!r} is not supported")
        text_fields = {f.name: t[f.name] for f in dataclasses.fields(TextConfig) if f.name in t}
        text_fields["rope_theta"] = float(rope.get("rope_theta", t.get("rope_theta", 10000.0)))
        if "head_dim" not in t and "hidden_size" in t and "num_attention_heads" in t:
            text_fields["head_dim"] = TextConfig.head_dim  # Gemma's default head_dim is a constant, not width/heads
        text = TextConfig(**text_fields)
        if text.num_attention_heads % text.num_key_value_heads:
            raise ValueError(f"{where}: {text.num_attention_heads} heads are not a multiple of {text.num_key_value_heads} kv heads")
        projection = hf.get("projection_dim", v.get("projection_dim", text.hidden_size))
        if projection != text.hidden_size:
            raise ValueError(f"{where}: projection_dim {projection} differs from the Gemma width {text.hidden_size}")
        if hf.get("tie_word_embeddings", True) is False or t.get("tie_word_embeddings", True) is False:
            raise ValueError(f"{where}: untied output embeddings are not supported (PaliGemma ties them)")
        return cls(
            vision=vision,
            text=text,
            image_token_index=int(hf.get("image_token_index", hf.get("image_token_id", 256000))),
            pad_token_id=int(t.get("pad_token_id", hf.get("pad_token_id", 0)) or 0),
            eos_token_id=_first(t.get("eos_token_id", hf.get("eos_token_id", 1))),
            bos_token_id=_first(t.get("bos_token_id", hf.get("bos_token_id", 2))),
        )


def _first(x) -> int:
    return int(x[0] if isinstance(x, (list, tuple)) else x)


def _dtype(config: PaliGemmaConfig):
    return jnp.dtype(config.dtype)


@flax.struct.dataclass
class PaliGemmaOutput:
    """The logits [batch, sequence, vocab], readable as `out.logits` or `out["logits"]`."""

    logits: jax.Array

    def __getitem__(self, key):
        return getattr(self, key)


# ----------------------------------------------------------------------------------------------- SigLIP


class SiglipAttention(nn.Module):
    config: VisionConfig
    dtype: Any

    @nn.compact
    def __call__(self, x):
        c = self.config
        heads, hd = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        dense = lambda name: nn.Dense(c.hidden_size, dtype=self.dtype, name=name)
        # heads ahead of positions ([B, heads, T, hd]): plain batched matmuls, which XLA's CPU backend runs
        # faster than einsums with the head axis between the positions and the features
        split = lambda y: y.reshape(*y.shape[:-1], heads, hd).swapaxes(1, 2)
        q, k, v = split(dense("q_proj")(x)), split(dense("k_proj")(x)), split(dense("v_proj")(x))
        logits = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32) * hd**-0.5
        probs = attention.softmax(logits).astype(self.dtype)
        out = jnp.einsum("bhqk,bhkd->bhqd", probs, v).swapaxes(1, 2).reshape(x.shape)
        return dense("out_proj")(out)


class SiglipMLP(nn.Module):
    config: VisionConfig
    dtype: Any

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(self.config.intermediate_size, dtype=self.dtype, name="fc1")(x)
        h = jax.nn.gelu(h, approximate=self.config.hidden_act != "gelu")
        return nn.Dense(self.config.hidden_size, dtype=self.dtype, name="fc2")(h)


class SiglipEncoderLayer(nn.Module):
    config: VisionConfig
    dtype: Any

    @nn.compact
    def __call__(self, x):
        ln = lambda name: nn.LayerNorm(epsilon=self.config.layer_norm_eps, dtype=self.dtype, name=name)
        x = x + SiglipAttention(self.config, self.dtype, name="self_attn")(ln("layer_norm1")(x))
        return x + SiglipMLP(self.config, self.dtype, name="mlp")(ln("layer_norm2")(x))


class PatchEmbedding(nn.Module):
    """A stride-p, p x p, VALID convolution (nn.Conv's parameters: HWIO kernel and bias) computed as one matmul
    over the flattened patches, straight from NCHW pixels: XLA's CPU convolution was 30x slower."""

    features: int
    patch: int
    dtype: Any

    @nn.compact
    def __call__(self, pixels_nchw):
        b, ch, h, w = pixels_nchw.shape
        p = self.patch
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (p, p, ch, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x = pixels_nchw.astype(self.dtype).reshape(b, ch, h // p, p, w // p, p)
        x = jnp.einsum("bcipjq,pqcd->bijd", x, kernel.astype(self.dtype)) + bias.astype(self.dtype)
        return x.reshape(b, (h // p) * (w // p), self.features)


class SiglipVision(nn.Module):
    """SigLIP ViT without the pooling head: [B, C, H, W] pixels -> [B, patches, width] (post-layernorm)."""

    config: VisionConfig
    dtype: Any

    @nn.compact
    def __call__(self, pixels_nchw):
        c = self.config
        x = PatchEmbedding(c.hidden_size, c.patch_size, self.dtype, name="patch_embedding")(pixels_nchw)
        pos = self.param("position_embedding", nn.initializers.normal(0.02), (c.num_patches, c.hidden_size))
        x = x + pos.astype(self.dtype)[None]
        for i in range(c.num_hidden_layers):
            x = SiglipEncoderLayer(c, self.dtype, name=f"layers_{i}")(x)
        return nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name="post_layernorm")(x)


# ----------------------------------------------------------------------------------------------- Gemma


class RMSNorm(nn.Module):
    """Gemma's RMSNorm: the scale is stored as an offset from one, x * (1 + scale), computed in float32."""

    eps: float = 1e-6

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.zeros, (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * (1.0 + scale)).astype(x.dtype)


def rope(x, positions, theta: float):
    """Rotary embedding, rotate-half layout (transformers'): x [B, T, heads, hd], positions [B, T]."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, hd/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(emb), jnp.sin(emb)
    x32 = x.astype(jnp.float32)
    rotated = jnp.concatenate([-x32[..., hd // 2 :], x32[..., : hd // 2]], axis=-1)
    return (x32 * cos + rotated * sin).astype(x.dtype)


class GemmaAttention(nn.Module):
    """Grouped-query attention (multi-query when one kv head) with an optional key/value cache."""

    config: TextConfig
    dtype: Any

    @nn.compact
    def __call__(self, x, positions, mask, cache=None, cache_index=None):
        c = self.config
        h, kv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        dense = lambda n, name: nn.Dense(n, use_bias=False, dtype=self.dtype, name=name)
        b, t, _ = x.shape
        q = dense(h * hd, "q_proj")(x).reshape(b, t, h, hd)
        k = dense(kv * hd, "k_proj")(x).reshape(b, t, kv, hd)
        v = dense(kv * hd, "v_proj")(x).reshape(b, t, kv, hd)
        q, k = rope(q, positions, c.rope_theta), rope(k, positions, c.rope_theta)
        if cache is not None:
            k_cache, v_cache = cache
            k = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, cache_index, 0, 0))
            v = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, cache_index, 0, 0))
            cache = (k, v)
        # Query head i uses kv head i // g, as repeat_kv does. The g query heads of a kv head are folded into
        # its rows ([B, kv, T*g, hd]): one plain batched matmul per kv head, 30% faster on CPU than a 5-d einsum.
        g = h // kv
        q = q.reshape(b, t, kv, g, hd).transpose(0, 2, 1, 3, 4).reshape(b, kv, t * g, hd)
        k, v = (y.astype(self.dtype).transpose(0, 2, 1, 3) for y in (k, v))  # [B, kv, S, hd]
        logits = jnp.einsum("bkqd,bksd->bkqs", q, k).astype(jnp.float32) * hd**-0.5
        logits = jnp.where(jnp.repeat(mask, g, axis=1)[:, None], logits, _MASKED)
        probs = attention.softmax(logits).astype(self.dtype)
        out = jnp.einsum("bkqs,bksd->bkqd", probs, v).reshape(b, kv, t, g, hd)
        out = out.transpose(0, 2, 1, 3, 4).reshape(b, t, h * hd)
        return dense(c.hidden_size, "o_proj")(out), cache


class GemmaMLP(nn.Module):
    config: TextConfig
    dtype: Any

    @nn.compact
    def __call__(self, x):
        dense = lambda n, name: nn.Dense(n, use_bias=False, dtype=self.dtype, name=name)
        gate = jax.nn.gelu(dense(self.config.intermediate_size, "gate_proj")(x), approximate=True)
        return dense(self.config.hidden_size, "down_proj")(gate * dense(self.config.intermediate_size, "up_proj")(x))


class GemmaLayer(nn.Module):
    config: TextConfig
    dtype: Any

    @nn.compact
    def __call__(self, x, positions, mask, cache=None, cache_index=None):
        eps = self.config.rms_norm_eps
        y, cache = GemmaAttention(self.config, self.dtype, name="self_attn")(
            RMSNorm(eps, name="input_layernorm")(x), positions, mask, cache, cache_index
        )
        x = x + y
        x = x + GemmaMLP(self.config, self.dtype, name="mlp")(RMSNorm(eps, name="post_attention_layernorm")(x))
        return x, cache


class Gemma(nn.Module):
    """Gemma decoder; the output layer is the (tied) token embedding."""

    config: TextConfig
    dtype: Any

    def setup(self):
        c = self.config
        self.embed_tokens = nn.Embed(c.vocab_size, c.hidden_size)
        self.layers = [GemmaLayer(c, self.dtype) for _ in range(c.num_hidden_layers)]
        self.norm = RMSNorm(c.rms_norm_eps)

    def embed(self, ids):
        # Embeddings are scaled by sqrt(width) (rounded to the parameters' type, as transformers does).
        scale = jnp.asarray(math.sqrt(self.config.hidden_size), self.embed_tokens.embedding.dtype)
        return (self.embed_tokens(ids) * scale).astype(self.dtype)

    def __call__(self, x, positions, mask, cache=None, cache_index=None, logits_from: int = 0):
        """x [B, T, D] embeddings, positions [B, T], mask [B, T, S] (True = may attend) -> logits, cache.

        logits_from: the first position that gets logits (the output layer is the largest matmul; a caller
        that needs no logits for the image tokens skips them)."""
        new_cache = []
        for i, layer in enumerate(self.layers):
            x, layer_cache = layer(x, positions, mask, None if cache is None else cache[i], cache_index)
            new_cache.append(layer_cache)
        x = self.norm(x[:, logits_from:])
        logits = self.embed_tokens.attend(x.astype(self.dtype)).astype(jnp.float32)
        cap = self.config.final_logit_softcapping
        if cap:
            logits = jnp.tanh(logits / cap) * cap
        return logits, (tuple(new_cache) if cache is not None else None)


# ----------------------------------------------------------------------------------------------- PaliGemma


def merge_tokens(tokens, k: int):
    """[B, g*g, D] patch tokens (row-major grid) -> [B, (g/k)^2, k*k*D]: each k x k block of neighbours as one."""
    if k == 1:
        return tokens
    b, n, d = tokens.shape
    g = math.isqrt(n)
    x = tokens.reshape(b, g // k, k, g // k, k, d).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (g // k) ** 2, k * k * d)


def unmerge_tokens(values, k: int):
    """The inverse layout of `merge_tokens`: [B, (g/k)^2, k*k*F] -> [B, g*g, F] in the patches' row-major order."""
    if k == 1:
        return values
    b, n, kkf = values.shape
    m, f = math.isqrt(n), kkf // (k * k)
    x = values.reshape(b, m, m, k, k, f).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (m * k) ** 2, f)


def prefix_lm_mask(token_type_ids, attention_mask):
    """[B, T, T] attention mask: causal, plus full attention among prefix tokens (type 0), minus padding keys.

    The same pattern as big_vision's `mask_ar` (cumulative: 1 on answer tokens) for a prefix in front.
    """
    t = token_type_ids.shape[1]
    causal = jnp.tril(jnp.ones((t, t), bool))[None]
    prefix = token_type_ids == 0
    bidirectional = prefix[:, :, None] & prefix[:, None, :]
    return (causal | bidirectional) & attention_mask.astype(bool)[:, None, :]


class PaliGemma(nn.Module):
    config: PaliGemmaConfig

    def setup(self):
        c, dtype = self.config, _dtype(self.config)
        self.vision_tower = SiglipVision(c.vision, dtype)
        self.multi_modal_projector = nn.Dense(c.text.hidden_size, dtype=dtype)
        self.language_model = Gemma(c.text, dtype)

    def embed_image(self, pixel_values):
        """pixel_values [B, C, H, W] (NCHW, as transformers takes them) -> [B, image tokens, text width]."""
        c = self.config.vision
        if pixel_values.shape[1:] != (c.num_channels, c.image_size, c.image_size):
            raise ValueError(
                f"pixel_values has shape {pixel_values.shape}, expected [B, {c.num_channels}, {c.image_size}, {c.image_size}]"
            )
        tokens = merge_tokens(self.vision_tower(pixel_values), self.config.image_token_merge)
        return self.multi_modal_projector(tokens)

    def embed(self, input_ids, pixel_values=None, image_features=None):
        """Token embeddings with the image features in place of the image tokens (in order, per row).

        image_features: `embed_image`'s output, given instead of pixel_values where the vision tower and
        projector are frozen and their output was computed once."""
        is_image = input_ids == self.config.image_token_index
        x = self.language_model.embed(jnp.where(is_image, 0, input_ids))
        if pixel_values is None and image_features is None:
            return x
        image = (self.embed_image(pixel_values) if image_features is None else image_features).astype(x.dtype)
        index = jnp.clip(jnp.cumsum(is_image, axis=1) - 1, 0, image.shape[1] - 1)
        image_tokens = jnp.take_along_axis(image, index[..., None], axis=1)
        return jnp.where(is_image[..., None], image_tokens, x)

    def __call__(self, input_ids, pixel_values=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 image_features=None, logits_from: int = 0):
        """transformers' forward: positions 1-based, prefix-LM mask from token_type_ids (causal without);
        image_features may stand in for pixel_values (see `embed`); logits for positions logits_from.. only."""
        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = jnp.ones((b, t), jnp.int32)
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(1, t + 1), (b, t))
        if token_type_ids is None:
            token_type_ids = jnp.ones((b, t), jnp.int32)  # all "answer": plain causal
        mask = prefix_lm_mask(token_type_ids, attention_mask)
        logits, _ = self.language_model(self.embed(input_ids, pixel_values, image_features), position_ids, mask,
                                        logits_from=logits_from)
        return PaliGemmaOutput(logits=logits)

    def prefill(self, input_ids, pixel_values, attention_mask, cache_size: int):
        """Run the whole prefix (bidirectional among its valid tokens) into a fresh cache of `cache_size` slots.

        Returns (logits [B, T, V], cache, positions [B, T]); positions count valid tokens from 1, as
        transformers' generate() does for padded prompts.
        """
        c = self.config.text
        b, t = input_ids.shape
        valid = attention_mask.astype(bool)
        positions = jnp.maximum(jnp.cumsum(valid, axis=1), 1)
        key_valid = jnp.zeros((b, cache_size), bool).at[:, :t].set(valid)
        mask = jnp.broadcast_to(key_valid[:, None, :], (b, t, cache_size))
        shape = (b, cache_size, c.num_key_value_heads, c.head_dim)
        cache = tuple((jnp.zeros(shape, _dtype(self.config)),) * 2 for _ in range(c.num_hidden_layers))
        logits, cache = self.language_model(self.embed(input_ids, pixel_values), positions, mask, cache, 0)
        return logits, cache, positions

    def extend(self, token_ids, positions, key_valid, cache, cache_index):
        """Feed new tokens [B, T] at cache slots cache_index.. (key_valid [B, S] already marks them)."""
        b, t = token_ids.shape
        s = key_valid.shape[1]
        slots = cache_index + jnp.arange(t)
        causal = jnp.arange(s)[None, :] <= slots[:, None]  # [T, S]
        mask = key_valid[:, None, :] & causal[None]
        return self.language_model(self.language_model.embed(token_ids), positions, mask, cache, cache_index)


def init_params(config: PaliGemmaConfig, seed: int = 0):
    """Random parameters for `config` (Gemma's norms start at zero offset, i.e. scale one)."""
    model = PaliGemma(config)
    c = config
    ids = jnp.zeros((1, c.num_image_tokens + 2), jnp.int32).at[:, : c.num_image_tokens].set(c.image_token_index)
    pixels = jnp.zeros((1, c.vision.num_channels, c.vision.image_size, c.vision.image_size), jnp.float32)
    return model, jax.jit(model.init)(jax.random.key(seed), ids, pixels)["params"]

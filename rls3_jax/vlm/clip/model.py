"""CLIP in Flax (linen), with the architecture of OpenAI CLIP as Hugging Face transformers implements it.

Image tower: patch embedding (no bias), class token, learned positions, pre-LayerNorm ("pre_layrnorm"), a
pre-LN transformer, post-LayerNorm of the class token, linear projection. Text tower: token + learned
position embeddings, a causal pre-LN transformer, final LayerNorm, pooling at the end-of-text token,
linear projection. Logits are cosine similarities times exp(logit_scale).

The parameter tree mirrors transformers' module names (`text_model/encoder/layers_0/self_attn/q_proj/...`)
so that loading a checkpoint is a mechanical renaming (see `weights.py`, which also holds `from_pretrained`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from rls3_jax.vlm import attention

_ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
}


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 49406
    eos_token_id: int = 49407


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """Defaults are those of transformers' CLIPConfig (openai/clip-vit-base-patch32)."""

    text: CLIPTextConfig = CLIPTextConfig()
    vision: CLIPVisionConfig = CLIPVisionConfig()
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592

    def __post_init__(self):
        for name, tower in (("text", self.text), ("vision", self.vision)):
            if tower.hidden_size % tower.num_attention_heads:
                raise ValueError(
                    f"CLIP {name} config: hidden_size {tower.hidden_size} is not a multiple of "
                    f"num_attention_heads {tower.num_attention_heads}"
                )
            if tower.hidden_act not in _ACTIVATIONS:
                raise ValueError(f"CLIP {name} config: unknown hidden_act {tower.hidden_act!r}")
        if self.vision.image_size % self.vision.patch_size:
            raise ValueError(
                f"CLIP vision config: image_size {self.vision.image_size} is not a multiple of "
                f"patch_size {self.vision.patch_size}"
            )

    @classmethod
    def from_hf_config(cls, hf: dict, source: str = "config") -> CLIPConfig:
        """From a transformers `config.json` dict (model_type "clip"); missing keys take transformers' defaults."""
        if hf.get("model_type") != "clip":
            raise ValueError(f"{source}: model_type is {hf.get('model_type')!r}, expected 'clip'")

        def sub(kind, raw):
            raw = dict(raw or {})
            for key in ("image_size", "patch_size"):
                if isinstance(raw.get(key), (list, tuple)):
                    if len(set(raw[key])) != 1:
                        raise ValueError(
                            f"{source}: non-square vision_config.{key} {raw[key]} is not supported"
                        )
                    raw[key] = raw[key][0]
            if isinstance(raw.get("eos_token_id"), (list, tuple)):
                raw["eos_token_id"] = raw["eos_token_id"][0]
            names = {f.name for f in dataclasses.fields(kind)}
            return kind(**{k: v for k, v in raw.items() if k in names and v is not None})

        return cls(
            text=sub(CLIPTextConfig, hf.get("text_config")),
            vision=sub(CLIPVisionConfig, hf.get("vision_config")),
            projection_dim=int(hf.get("projection_dim") or 512),
            logit_scale_init_value=float(hf.get("logit_scale_init_value", 2.6592)),
        )

    def to_hf_config(self) -> dict:
        """The transformers `config.json` dict describing this architecture."""
        return {
            "model_type": "clip",
            "architectures": ["CLIPModel"],
            "projection_dim": self.projection_dim,
            "logit_scale_init_value": self.logit_scale_init_value,
            "text_config": {**dataclasses.asdict(self.text), "projection_dim": self.projection_dim},
            "vision_config": {**dataclasses.asdict(self.vision), "projection_dim": self.projection_dim},
        }

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> CLIPConfig:
        with open(path) as f:
            return cls.from_hf_config(json.load(f), source=str(path))


@flax.struct.dataclass
class CLIPOutput:
    """transformers' CLIPOutput fields: logits_per_image [N_img, N_txt], logits_per_text = its transpose,
    image_embeds / text_embeds L2-normalised projections. Readable as attributes or as dict keys."""

    logits_per_image: jax.Array
    logits_per_text: jax.Array
    image_embeds: jax.Array
    text_embeds: jax.Array

    def __getitem__(self, key: str):
        return getattr(self, key)

    def keys(self):
        return ("logits_per_image", "logits_per_text", "image_embeds", "text_embeds")


class CLIPAttention(nn.Module):
    hidden_size: int
    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, allowed=None):
        """x [B, T, D]; allowed: bool [B, 1|H, T, T] or None (every query sees every key)."""
        head_dim = self.hidden_size // self.num_heads
        dense = lambda name: nn.Dense(self.hidden_size, dtype=self.dtype, name=name)
        # heads ahead of positions ([B, heads, T, hd]): plain batched matmuls, which XLA's CPU backend runs
        # faster than einsums with the head axis between the positions and the features
        split = lambda t: t.reshape(*t.shape[:2], self.num_heads, head_dim).swapaxes(1, 2)
        q = split(dense("q_proj")(x)) * jnp.asarray(head_dim**-0.5, self.dtype)
        k = split(dense("k_proj")(x))
        v = split(dense("v_proj")(x))
        logits = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32)
        if allowed is not None:
            logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
        weights = attention.softmax(logits).astype(self.dtype)
        out = jnp.einsum("bhqk,bhkd->bhqd", weights, v).swapaxes(1, 2).reshape(x.shape)
        return dense("out_proj")(out)


class CLIPMLP(nn.Module):
    hidden_size: int
    intermediate_size: int
    hidden_act: str
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.intermediate_size, dtype=self.dtype, name="fc1")(x)
        x = _ACTIVATIONS[self.hidden_act](x)
        return nn.Dense(self.hidden_size, dtype=self.dtype, name="fc2")(x)


class CLIPEncoderLayer(nn.Module):
    config: CLIPTextConfig | CLIPVisionConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, allowed=None):
        c = self.config
        norm = lambda name: nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name=name)
        x = x + CLIPAttention(c.hidden_size, c.num_attention_heads, self.dtype, name="self_attn")(
            norm("layer_norm1")(x), allowed
        )
        return x + CLIPMLP(c.hidden_size, c.intermediate_size, c.hidden_act, self.dtype, name="mlp")(
            norm("layer_norm2")(x)
        )


class CLIPEncoder(nn.Module):
    config: CLIPTextConfig | CLIPVisionConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, allowed=None):
        for i in range(self.config.num_hidden_layers):
            x = CLIPEncoderLayer(self.config, self.dtype, name=f"layers_{i}")(x, allowed)
        return x


class CLIPTextEmbeddings(nn.Module):
    config: CLIPTextConfig

    @nn.compact
    def __call__(self, input_ids, position_ids):
        c = self.config
        init = nn.initializers.normal(0.02)
        tokens = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=init, name="token_embedding")(input_ids)
        positions = nn.Embed(
            c.max_position_embeddings, c.hidden_size, embedding_init=init, name="position_embedding"
        )
        return tokens + positions(position_ids)


class CLIPTextTransformer(nn.Module):
    config: CLIPTextConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, position_ids=None):
        """Pooled (end-of-text) hidden state [B, D] after the final LayerNorm."""
        c = self.config
        batch, length = input_ids.shape
        if length > c.max_position_embeddings:
            raise ValueError(
                f"text length {length} exceeds max_position_embeddings {c.max_position_embeddings}"
            )
        if position_ids is None:
            position_ids = jnp.arange(length)[None, :]
        x = CLIPTextEmbeddings(c, name="embeddings")(input_ids, position_ids).astype(self.dtype)
        allowed = jnp.tril(jnp.ones((length, length), bool))[None, None]
        if attention_mask is not None:
            allowed = allowed & (attention_mask[:, None, None, :] > 0)
        x = CLIPEncoder(c, self.dtype, name="encoder")(x, allowed)
        x = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name="final_layer_norm")(x)
        if c.eos_token_id == 2:
            # Old OpenAI configs: the end-of-text token has the largest id (transformers keeps this rule).
            eos = jnp.argmax(input_ids, axis=-1)
        else:
            eos = jnp.argmax(input_ids == c.eos_token_id, axis=-1)
        return x[jnp.arange(batch), eos]


class CLIPVisionEmbeddings(nn.Module):
    config: CLIPVisionConfig

    @nn.compact
    def __call__(self, pixel_values, dtype):
        """pixel_values NCHW -> [B, 1 + patches, D]."""
        c = self.config
        batch, channels, height, width = pixel_values.shape
        if (height, width) != (c.image_size, c.image_size) or channels != c.num_channels:
            raise ValueError(
                f"pixel_values of shape {pixel_values.shape} do not match the model "
                f"({c.num_channels}x{c.image_size}x{c.image_size})"
            )
        p, grid = c.patch_size, c.image_size // c.patch_size
        # A stride-p convolution with no bias is a matmul over the patches, contracted straight from NCHW (no
        # transposed copy of the pixels); the kernel keeps the HWIO layout of a convolution.
        patch_kernel = self.param(
            "patch_embedding", nn.initializers.normal(0.02), (p, p, c.num_channels, c.hidden_size)
        )
        x = pixel_values.astype(dtype).reshape(batch, channels, grid, p, grid, p)
        patches = jnp.einsum("bcipjq,pqcd->bijd", x, patch_kernel.astype(dtype))
        patches = patches.reshape(batch, grid * grid, c.hidden_size)
        cls = self.param("class_embedding", nn.initializers.normal(0.02), (c.hidden_size,))
        cls = jnp.broadcast_to(cls.astype(dtype), (batch, 1, c.hidden_size))
        positions = self.param(
            "position_embedding", nn.initializers.normal(0.02), (grid * grid + 1, c.hidden_size)
        )
        return jnp.concatenate([cls, patches], axis=1) + positions.astype(dtype)[None]


class CLIPVisionTransformer(nn.Module):
    config: CLIPVisionConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pixel_values):
        """Pooled (class token) hidden state [B, D] after the post-LayerNorm."""
        c = self.config
        norm = lambda name: nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name=name)
        x = CLIPVisionEmbeddings(c, name="embeddings")(pixel_values, self.dtype)
        x = norm("pre_layrnorm")(x)  # transformers' spelling
        x = CLIPEncoder(c, self.dtype, name="encoder")(x)
        return norm("post_layernorm")(x[:, 0])


def _normalize(x):
    x = x.astype(jnp.float32)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


class CLIPModel(nn.Module):
    """`apply({"params": p}, input_ids=..., pixel_values=..., attention_mask=...)` -> CLIPOutput.

    `dtype` is the compute dtype (bfloat16 on accelerators); parameters stay float32 and the embeddings,
    logits and loss are float32.
    """

    config: CLIPConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.text_model = CLIPTextTransformer(c.text, self.dtype)
        self.vision_model = CLIPVisionTransformer(c.vision, self.dtype)
        self.visual_projection = nn.Dense(c.projection_dim, use_bias=False, dtype=self.dtype)
        self.text_projection = nn.Dense(c.projection_dim, use_bias=False, dtype=self.dtype)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(c.logit_scale_init_value), ())

    def get_text_features(self, input_ids, attention_mask=None, position_ids=None):
        """Projected, unnormalised text features [B, projection_dim] (float32)."""
        pooled = self.text_model(input_ids, attention_mask, position_ids)
        return self.text_projection(pooled).astype(jnp.float32)

    def get_image_features(self, pixel_values=None, vision_pooled=None):
        """Projected, unnormalised image features [B, projection_dim] (float32).

        vision_pooled: the vision tower's pooled output (`pool_images`), given instead of pixel_values where
        the tower is frozen and was run once."""
        pooled = self.vision_model(pixel_values) if vision_pooled is None else vision_pooled.astype(self.dtype)
        return self.visual_projection(pooled).astype(jnp.float32)

    def pool_images(self, pixel_values):
        """The vision tower's pooled output [B, vision hidden size], before the visual projection."""
        return self.vision_model(pixel_values)

    def __call__(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None, vision_pooled=None):
        if input_ids is None or (pixel_values is None and vision_pooled is None):
            raise ValueError("CLIPModel needs input_ids and pixel_values (or vision_pooled)")
        image_embeds = _normalize(self.get_image_features(pixel_values, vision_pooled))
        text_embeds = _normalize(self.get_text_features(input_ids, attention_mask, position_ids))
        logits_per_text = text_embeds @ image_embeds.T * jnp.exp(self.logit_scale)
        return CLIPOutput(
            logits_per_image=logits_per_text.T,
            logits_per_text=logits_per_text,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
        )


@functools.lru_cache(maxsize=16)
def _jitted_init(config: CLIPConfig):
    model = CLIPModel(config)
    ids = jnp.zeros((1, min(8, config.text.max_position_embeddings)), jnp.int32)
    pixels = jnp.zeros((1, config.vision.num_channels, config.vision.image_size, config.vision.image_size))
    return jax.jit(lambda key: model.init(key, input_ids=ids, pixel_values=pixels)["params"])


def init_params(config: CLIPConfig, seed: int = 0) -> dict:
    """Random parameters for `config` (float32), deterministic under `seed` (compiled once per config)."""
    return _jitted_init(config)(jax.random.PRNGKey(seed))


def param_shapes(config: CLIPConfig) -> dict:
    """The parameter tree of `config` as ShapeDtypeStructs (no computation)."""
    model = CLIPModel(config)
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    pixels = jax.ShapeDtypeStruct(
        (1, config.vision.num_channels, config.vision.image_size, config.vision.image_size), jnp.float32
    )
    return jax.eval_shape(
        lambda i, p: model.init(jax.random.PRNGKey(0), input_ids=i, pixel_values=p), ids, pixels
    )["params"]


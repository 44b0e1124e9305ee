"""Hugging Face CLIP checkpoints -> our Flax parameter tree (`from_pretrained`) and back (`save_clip_params`).
Weights are read with `hf_weights` (no torch); the checkpoint's image preprocessing and tokenizer are in `inputs`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rls3_jax.vlm import hf_weights
from rls3_jax.vlm.clip.model import CLIPConfig, CLIPModel, param_shapes

# The two parameters whose layout is not the generic Linear / LayerNorm / Embedding one.
_PATCH_KERNEL = ("vision_model", "embeddings", "patch_embedding")
_VISION_POSITIONS = ("vision_model", "embeddings", "position_embedding")


def hf_name(path: tuple[str, ...]) -> str:
    """Flax parameter path -> transformers state-dict key."""
    parts = [p.replace("layers_", "layers.") if p.startswith("layers_") else p for p in path]
    if path in (_PATCH_KERNEL, _VISION_POSITIONS):
        return ".".join(parts) + ".weight"
    leaf = parts[-1]
    if leaf in ("kernel", "scale", "embedding"):
        parts[-1] = "weight"
    return ".".join(parts)


def hf_to_flax(path: tuple[str, ...], tensor: np.ndarray) -> np.ndarray:
    """Rearrange a transformers tensor into our layout for the parameter at `path`."""
    if path == _PATCH_KERNEL:
        return tensor.transpose(2, 3, 1, 0)  # Conv2d OIHW -> HWIO
    if path[-1] == "kernel":
        return tensor.T  # Linear [out, in] -> Dense [in, out]
    return tensor


def flax_to_hf(path: tuple[str, ...], array: np.ndarray) -> np.ndarray:
    if path == _PATCH_KERNEL:
        return array.transpose(3, 2, 0, 1)
    if path[-1] == "kernel":
        return array.T
    return array


def param_paths(tree) -> list[tuple[tuple[str, ...], object]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(tuple(k.key for k in keypath), leaf) for keypath, leaf in flat]


def unflatten_paths(items: dict[tuple[str, ...], np.ndarray]) -> dict:
    tree: dict = {}
    for path, value in items.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def load_clip_params(path: str | os.PathLike) -> tuple[CLIPConfig, dict]:
    """(config, float32 params) from a transformers CLIPModel directory; clear errors for a missing
    directory, another model type, a missing tensor or a shape mismatch."""
    path = hf_weights.checkpoint_dir(path)
    config = CLIPConfig.from_hf_config(hf_weights.read_config(path), source=str(path / "config.json"))
    weights = hf_weights.LazyWeights(path)
    # Some exports prefix everything (e.g. "clip." from a wrapping model); accept one common prefix.
    prefix = ""
    if "logit_scale" not in weights:
        candidates = [k[: -len("logit_scale")] for k in weights if k.endswith(".logit_scale")]
        if len(candidates) == 1:
            prefix = candidates[0]
    params = {}
    for p, expected in param_paths(param_shapes(config)):
        name = prefix + hf_name(p)
        if name not in weights:
            raise KeyError(f"checkpoint {path} lacks parameter {name} (for {'/'.join(p)})")
        value = hf_to_flax(p, weights[name])
        if tuple(value.shape) != tuple(expected.shape):
            raise ValueError(
                f"checkpoint {path}: parameter {name} has shape {tuple(weights[name].shape)}, which does not fit "
                f"{'/'.join(p)} of shape {tuple(expected.shape)} given config.json"
            )
        params[p] = np.asarray(value, dtype=np.float32)
    return config, unflatten_paths(params)


def from_pretrained(path: str | os.PathLike, dtype: Any = jnp.float32) -> tuple[CLIPModel, dict]:
    """Load a Hugging Face CLIP directory (config.json + safetensors) -> (CLIPModel, params). No torch."""
    config, params = load_clip_params(path)
    return CLIPModel(config, dtype=dtype), params


def save_clip_params(path: str | os.PathLike, config: CLIPConfig, params: dict) -> Path:
    """Write params as a transformers-compatible CLIP directory (config.json + model.safetensors)."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {
        hf_name(p): np.array(flax_to_hf(p, np.asarray(v, np.float32)), order="C") for p, v in param_paths(params)
    }
    save_file(tensors, str(path / hf_weights.SINGLE_FILE), metadata={"format": "pt"})
    with open(path / "config.json", "w") as f:
        json.dump(config.to_hf_config(), f, indent=2)
    return path

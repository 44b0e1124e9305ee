"""Hugging Face CLIP checkpoints -> our Flax parameter tree (`from_pretrained`), plus the checkpoint's own image
preprocessing and tokenizer. Weights are read with `hf_weights` (no torch); transformers is only needed for the
tokenizer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

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


class CLIPImagePreprocessor:
    """transformers' CLIPImageProcessor in numpy/PIL: resize the shortest side to `size` (bicubic), center
    crop to `crop_size`, rescale by 1/255, normalise with image_mean/std -> NCHW float32."""

    def __init__(
        self,
        size=224,
        crop_size=224,
        image_mean=(0.48145466, 0.4578275, 0.40821073),
        image_std=(0.26862954, 0.26130258, 0.27577711),
        rescale_factor=1 / 255,
        resample=3,
        do_resize=True,
        do_center_crop=True,
        do_rescale=True,
        do_normalize=True,
    ):
        self.size, self.crop_size, self.resample = int(size), int(crop_size), int(resample)
        self.image_mean = np.asarray(image_mean, np.float32)
        self.image_std = np.asarray(image_std, np.float32)
        self.rescale_factor = float(rescale_factor)
        self.do_resize, self.do_center_crop = do_resize, do_center_crop
        self.do_rescale, self.do_normalize = do_rescale, do_normalize

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> CLIPImagePreprocessor:
        path = Path(path)
        file = path / "preprocessor_config.json"
        if not file.is_file():
            raise FileNotFoundError(f"checkpoint directory {path} has no preprocessor_config.json")
        with open(file) as f:
            cfg = json.load(f)
        size = cfg.get("size", 224)
        if isinstance(size, dict):
            if "shortest_edge" not in size:
                raise ValueError(f"{file}: size {size} is not supported (expected shortest_edge)")
            size = size["shortest_edge"]
        crop = cfg.get("crop_size", size)
        if isinstance(crop, dict):
            if crop.get("height") != crop.get("width"):
                raise ValueError(f"{file}: non-square crop_size {crop} is not supported")
            crop = crop["height"]
        keys = (
            "image_mean",
            "image_std",
            "rescale_factor",
            "resample",
            "do_resize",
            "do_center_crop",
            "do_rescale",
            "do_normalize",
        )
        return cls(size=size, crop_size=crop, **{k: cfg[k] for k in keys if k in cfg and cfg[k] is not None})

    def resize(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.size, int(self.size * long / short)
        new_h, new_w = (new_long, new_short) if w <= h else (new_short, new_long)
        return np.asarray(Image.fromarray(image).resize((new_w, new_h), resample=self.resample))

    def center_crop(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        c = self.crop_size
        if h < c or w < c:
            pad_h, pad_w = max(c - h, 0), max(c - w, 0)
            top, left = -(-pad_h // 2), -(-pad_w // 2)
            image = np.pad(image, ((top, pad_h - top), (left, pad_w - left), (0, 0)))
            h, w = image.shape[:2]
        top, left = (h - c) // 2, (w - c) // 2
        return image[top : top + c, left : left + c]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] (or one [H, W, 3]) -> pixel_values float32 [N, 3, crop, crop]."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")
        out = []
        for image in images:
            if self.do_resize:
                image = self.resize(image)
            if self.do_center_crop:
                image = self.center_crop(image)
            x = image.astype(np.float32)
            if self.do_rescale:
                x = x * np.float32(self.rescale_factor)
            if self.do_normalize:
                x = (x - self.image_mean) / self.image_std
            out.append(x.transpose(2, 0, 1))
        return np.stack(out).astype(np.float32)


def load_hf_tokenizer(path: str | os.PathLike):
    """The checkpoint's own tokenizer via transformers (local files only)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ImportError(
            "loading a Hugging Face CLIP checkpoint's tokenizer needs transformers: pip install 'rls3_jax[hf]'"
        ) from None
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"checkpoint directory {path} has no usable tokenizer files: {e}") from None

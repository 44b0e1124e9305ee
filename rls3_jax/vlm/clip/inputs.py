"""A Hugging Face CLIP checkpoint's own inputs: its image preprocessing in numpy/PIL (no torch) and its
tokenizer (through transformers, local files only).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image


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

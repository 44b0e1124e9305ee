"""PaliGemma inputs as transformers' PaliGemmaProcessor builds them, in numpy.

Sequence: <image> x num_image_tokens, BOS, question, "\\n" (the prefix, token type 0), then the answer and
EOS (the suffix, token type 1). Images: resized to the model's size (bicubic), rescaled to [0, 1] and
normalised with mean/std 0.5 (or the checkpoint's preprocessor_config.json), as NCHW float32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rls3_jax.vlm.paligemma.tokenizer import WordTokenizer


@dataclass(frozen=True)
class ImageSpec:
    size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @classmethod
    def from_preprocessor_config(cls, path: str | Path, size: int) -> ImageSpec:
        path = Path(path)
        if not path.is_file():
            return cls(size)
        cfg = json.loads(path.read_text())
        mean = cfg.get("image_mean", 0.5)
        std = cfg.get("image_std", 0.5)
        as3 = lambda v: tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else [v] * 3))
        return cls(size, as3(mean), as3(std))


def preprocess_images(images: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, 3, size, size]."""
    return np.ascontiguousarray(normalise(resize_images(images, spec), spec))


def resize_images(images: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """uint8 [N, H, W, 3] -> uint8 [N, size, size, 3] (bicubic, only where the size differs)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    if images.shape[1:3] != (spec.size, spec.size):
        images = np.stack(
            [np.asarray(Image.fromarray(im).resize((spec.size, spec.size), Image.BICUBIC)) for im in images]
        )
    return images


def normalise(images, spec: ImageSpec):
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W], rescaled and normalised: numpy on the host, or traced inside
    a jitted function (the learner sends uint8 images to the device, a quarter of the bytes)."""
    x = images.astype(np.float32) * np.float32(1 / 255)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return x.transpose(0, 3, 1, 2)


class WordPrompts:
    """Prompt/answer ids for the embedded default's word tokenizer."""

    def __init__(self, tokenizer: WordTokenizer):
        self.tokenizer = tokenizer
        self.pad_id, self.eos_id, self.bos_id = tokenizer.pad_id, tokenizer.eos_id, tokenizer.bos_id
        self.image_id = tokenizer.image_id

    def prefix(self, question: str) -> list[int]:
        """BOS, question, newline (the image tokens are put in front by the caller)."""
        return [self.bos_id, *self.tokenizer.encode(question), self.tokenizer.newline_id]

    def suffix(self, answer: str) -> list[int]:
        return [*self.tokenizer.encode(answer), self.eos_id]

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids)


class HFPrompts:
    """Prompt/answer ids with a real checkpoint's own tokenizer (transformers, imported only here)."""

    def __init__(self, path: str | Path):
        try:
            from transformers import AutoTokenizer
        except ImportError as e:
            raise ImportError(
                "loading a real PaliGemma checkpoint's tokenizer needs transformers: pip install 'rls3_jax[hf]'"
            ) from e
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        t = self.tokenizer
        self.pad_id, self.eos_id, self.bos_id = t.pad_token_id, t.eos_token_id, t.bos_token_id
        self.image_id = t.convert_tokens_to_ids("<image>")

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prefix(self, question: str) -> list[int]:
        return self._ids(self.tokenizer.bos_token + question + "\n")

    def suffix(self, answer: str) -> list[int]:
        return self._ids(answer + self.tokenizer.eos_token)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


def training_batch(prompts, num_image_tokens: int, questions, answers, length: int) -> dict[str, np.ndarray]:
    """Right-padded full sequences: input_ids, attention_mask, token_type_ids [B, length]."""
    b = len(questions)
    ids = np.full((b, length), prompts.pad_id, np.int32)
    mask = np.zeros((b, length), np.int32)
    types = np.ones((b, length), np.int32)
    for i, (q, a) in enumerate(zip(questions, answers)):
        prefix = [prompts.image_id] * num_image_tokens + prompts.prefix(q)
        seq = prefix + prompts.suffix(a)
        if len(seq) > length:
            raise ValueError(f"sample {i} has {len(seq)} tokens, more than the sequence length {length}")
        ids[i, : len(seq)] = seq
        mask[i, : len(seq)] = 1
        types[i, : len(prefix)] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def sequence_length(prompts, num_image_tokens: int, questions, answers, multiple: int = 8) -> int:
    longest = max(len(prompts.prefix(q)) + len(prompts.suffix(a)) for q, a in zip(questions, answers))
    return num_image_tokens + -(-longest // multiple) * multiple

"""The fixed validation (training rooms) and test (unseen rooms) sets every iteration is measured on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from rls3_jax import datasets, distributed
from rls3_jax.config import RunConfig
from rls3_jax.loop.components import make_env


@dataclasses.dataclass(frozen=True)
class FixedSets:
    val_images: np.ndarray
    val_samples: list[dict]
    test_images: np.ndarray
    test_samples: list[dict]


def _maker(config: RunConfig, split: str, n: int, seed: int, image_size: int):
    if config.env == "sim":
        return lambda: datasets.generate_fixed_set(split, n, image_size, seed)

    def from_env():
        env = make_env(config, split, image_size)
        try:
            return datasets.collect_from_env(env, n, seed)
        finally:
            env.close()

    return from_env


def fixed_sets(config: RunConfig, out: Path, image_size: int) -> FixedSets:
    """Made once and cached under `out`/cache by process 0 (the sets are deterministic: other processes make
    their own and cache nothing)."""
    val = _maker(config, "val", config.val_frames, datasets.VAL_SEED, image_size)
    test = _maker(config, "test", config.test_frames, datasets.TEST_SEED, image_size)
    if distributed.is_main():
        cache = out / "cache"
        val = datasets.load_or_make(cache, f"val_{config.env}_{config.val_frames}_{image_size}", val)
        test = datasets.load_or_make(cache, f"test_{config.env}_{config.test_frames}_{image_size}", test)
    else:
        val, test = val(), test()
    return FixedSets(*val, *test)

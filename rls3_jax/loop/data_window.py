"""The fine-tuning set across iterations (`RunConfig.data_window`).

Algorithm 1 clears the fine-tuning batch after every iteration: a window of 1, the paper's. A window of N
fine-tunes on the last N iterations' batches together, so that a model which needs thousands of samples to
learn a relation sees them (docs/paligemma.md) while the agent still chooses every one of them. Each batch is
exported to the run directory when it is made (`data/iteration_XXXX`, the `--export-data` layout), so a resumed
run reads the earlier ones back and fine-tunes on the same set.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rls3_jax import datasets
from rls3_jax.loop.components import RunError


@dataclasses.dataclass(frozen=True)
class Batch:
    """One iteration's fine-tuning batch. `encoded`: what a learner with a frozen vision tower computes from the
    images once (`Learner.encode_images`), kept so that later iterations' fine-tuning does not compute it again."""

    images: np.ndarray
    samples: list
    encoded: Any = None


def encode(learner, vlm_state, images: np.ndarray) -> Any:
    """The learner's `encode_images` of a batch (frozen parameters: any state of the run gives the same), or
    None for a learner without one."""
    encode_images = getattr(learner, "encode_images", None)
    return encode_images(vlm_state, images) if encode_images is not None else None


def batch_dir(out: Path, iteration: int) -> Path:
    return Path(out) / "data" / f"iteration_{iteration:04d}"


def restore(out: Path, iteration: int, size: int, learner, vlm_state) -> list[Batch]:
    """The batches of the size - 1 iterations before `iteration` (the first is 1), read from the run directory
    and encoded again."""
    first = max(1, iteration - size + 1)
    batches = []
    for earlier in range(first, iteration):
        directory = batch_dir(out, earlier)
        if not (directory / "metadata.jsonl").is_file():
            raise RunError(f"--resume with --data-window {size}: iteration {earlier}'s fine-tuning batch is "
                           f"missing from {directory}")
        images, samples = datasets.load_export(directory)
        batches.append(Batch(images, samples, encode(learner, vlm_state, images)))
    return batches


def slide(window: list[Batch], batch: Batch, size: int) -> list[Batch]:
    """The window after a new iteration's batch joins it: its last `size` batches."""
    return [*window, batch][-size:]


def fine_tuning_set(window: list[Batch]) -> tuple[np.ndarray, list, Any]:
    """The window's images, samples and encoding (None unless every batch has one), oldest first."""
    images = np.concatenate([b.images for b in window])
    samples = [s for b in window for s in b.samples]
    encoded = None if any(b.encoded is None for b in window) else _join([b.encoded for b in window])
    return images, samples, encoded


_join = jax.jit(jnp.concatenate)  # jitted: also for arrays spread over several processes

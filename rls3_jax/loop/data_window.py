"""The fine-tuning set across iterations (`RunConfig.data_window`).

Algorithm 1 clears the fine-tuning batch after every iteration: a window of 1, the paper's. A window of N
fine-tunes on the last N iterations' batches together, so that a model which needs thousands of samples to
learn a relation sees them (docs/paligemma.md) while the agent still chooses every one of them. Each batch is
exported to the run directory when it is made (`data/iteration_XXXX`, the `--export-data` layout), so a resumed
run reads the earlier ones back and fine-tunes on the same set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rls3_jax import datasets
from rls3_jax.loop.components import RunError

Batch = tuple[np.ndarray, list]  # (images, samples) of one iteration


def batch_dir(out: Path, iteration: int) -> Path:
    return Path(out) / "data" / f"iteration_{iteration:04d}"


def restore(out: Path, iteration: int, size: int) -> list[Batch]:
    """The batches of the size - 1 iterations before `iteration` (the first is 1), read from the run directory."""
    first = max(1, iteration - size + 1)
    batches = []
    for earlier in range(first, iteration):
        directory = batch_dir(out, earlier)
        if not (directory / "metadata.jsonl").is_file():
            raise RunError(f"--resume with --data-window {size}: iteration {earlier}'s fine-tuning batch is "
                           f"missing from {directory}")
        batches.append(datasets.load_export(directory))
    return batches


def slide(window: list[Batch], images: np.ndarray, samples: list, size: int) -> list[Batch]:
    """The window after a new iteration's batch joins it: its last `size` batches."""
    return [*window, (images, samples)][-size:]


def fine_tuning_set(window: list[Batch]) -> tuple[np.ndarray, list]:
    """The window's images and samples, oldest first."""
    return np.concatenate([images for images, _ in window]), [s for _, samples in window for s in samples]

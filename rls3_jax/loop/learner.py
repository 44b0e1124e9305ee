"""The seam between the loop and a VLM: what a learner provides and what its evaluation returns.

CLIP / NegCLIP (`rls3_jax.vlm` CLIP learner), PaliGemma, the scripted weak-spot VLM and the tests' stand-in
all implement `Learner`; the loop needs nothing else from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NotRequired, Protocol, TypedDict, runtime_checkable

import numpy as np


class Evaluation(TypedDict):
    """A learner's verdict on a set of samples (images with their captions and questions)."""

    metric: float  # accuracy (CLIP) or mean rubric score 1-5 (PaliGemma): higher is better
    loss: float
    reward: float  # J2: the VLM's failure on the set, the agent's reward (paper Eq. 3-4)
    per_sample_reward: np.ndarray  # [n] each sample's own J2 (reward="per-sample")
    per_sample_metric: np.ndarray  # [n]
    per_term: dict[str, float]  # the metric over the samples holding each spatial term
    per_complexity: dict[int, float]  # the metric over the samples with 1, 2 or 3 terms
    answers: NotRequired[list[str]]  # generative learners: what the VLM said


@runtime_checkable
class Learner(Protocol):
    """A VLM the loop evaluates and fine-tunes; its state is a pytree the loop checkpoints."""

    image_size: int  # the square RGB images (uint8) it takes

    def init_state(self, seed: int) -> Any:
        """The state before fine-tuning (loaded or embedded weights, fresh optimiser)."""

    def evaluate(self, state: Any, images: np.ndarray, samples: Sequence[dict]) -> Evaluation:
        """Score `images` [n, H, W, 3] against their `samples` (dicts with caption, question, terms, ...)."""

    def finetune(self, state: Any, images: np.ndarray, samples: Sequence[dict], k: int, key) -> tuple[Any, list[float]]:
        """K steps (PaliGemma) or epochs (CLIP) on the set: (new state, the steps' losses).

        A learner may also offer `encode_images(state, images)`: the work on the images that fine-tuning never
        changes (a frozen vision tower's output), or None. The loop then computes it once per batch and passes it
        on as `finetune(..., encoded=...)` for every call that batch is part of (loop/data_window.py)."""

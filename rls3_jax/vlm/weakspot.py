"""A scripted VLM with a known weak spot: it fails exactly on the samples that hold one of its weak terms.

`--vlm weakspot --weak-terms above,below` answers every sample whose caption holds a weak term wrongly (rubric
score 1) and every other sample rightly (5), instantly and without parameters. The VLM reward then pays for
exactly the weak-term samples, so an agent that learns to produce what the VLM gets wrong must raise their
share of the generated data: the check of RLS3's agent side, on the stand-in or on a Unity build, before any
accelerator hour is spent on a real VLM. With `learns=N` a weak term is mastered once the VLM was fine-tuned on
N samples holding it, a model of the loop's dynamics: a good agent reaches the full score in fewer samples.

It keeps the learners' contract (name, image_size, init_state, evaluate, finetune) and the rubric's scale, so
its records, rewards and figures are those of a PaliGemma run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from rls3_jax.prompts import TERMS
from rls3_jax.scoring import paligemma_reward


def parse_weak_terms(text: str) -> tuple[str, ...]:
    """'above,below' -> ('above', 'below'); an unknown or repeated term is a ValueError naming it."""
    terms = tuple(t.strip() for t in text.split(",") if t.strip())
    if not terms:
        raise ValueError(f"--weak-terms {text!r} names no term; choose from {', '.join(TERMS)}")
    for t in terms:
        if t not in TERMS:
            raise ValueError(f"--weak-terms: {t!r} is not one of {', '.join(TERMS)}")
    if len(set(terms)) != len(terms):
        raise ValueError(f"--weak-terms {text!r} names a term twice")
    return terms


@dataclasses.dataclass(frozen=True)
class WeakSpotLearner:
    weak_terms: tuple[str, ...]
    learns: int = 0  # 0: never learns; N: a weak term is mastered after N fine-tuning samples holding it
    steps_per_batch: int = 1  # the loop's K: its finetune calls over one batch add up to K steps
    image_size: int = 64  # the renders it is handed (it never looks at them)
    name: str = "weakspot"

    def init_state(self, seed: int = 0) -> dict:
        """Fine-tuning samples seen so far per term (TERMS order); `seed` is unused (nothing is random)."""
        del seed
        return {"seen": np.zeros(len(TERMS), np.float64)}

    def place(self, state) -> dict:
        return {"seen": np.asarray(state["seen"], np.float64)}

    def weak_now(self, state) -> set[str]:
        """The weak terms not yet mastered."""
        seen = np.asarray(state["seen"])
        return {t for t in self.weak_terms if not (self.learns and seen[TERMS.index(t)] >= self.learns - 1e-9)}

    def evaluate(self, state, images, samples: Sequence[dict]) -> dict:
        weak = self.weak_now(state)
        scores = np.array([1.0 if weak & set(s["terms"]) else 5.0 for s in samples])
        per_term = {t: float(scores[[t in s["terms"] for s in samples]].mean())
                    for t in TERMS if any(t in s["terms"] for s in samples)}
        per_complexity = {k: float(scores[[len(s["terms"]) == k for s in samples]].mean())
                          for k in (1, 2, 3) if any(len(s["terms"]) == k for s in samples)}
        mean = float(scores.mean())
        return {
            "metric": mean,
            "loss": float(np.mean(scores == 1.0)),  # the fraction it gets wrong
            "reward": paligemma_reward(mean),
            "per_sample_reward": (6.0 - scores) ** 2,
            "per_sample_metric": scores,
            "per_term": per_term,
            "per_complexity": per_complexity,
            "answers": ["wrong" if x == 1.0 else "right" for x in scores],
        }

    def finetune(self, state, images, samples: Sequence[dict], k: int, key) -> tuple[dict, list[float]]:
        """Counts the batch's samples per term, k / steps_per_batch of them per call: the loop fine-tunes in
        chunks of F steps, and the K steps of one batch count each of its samples once."""
        del images, key
        if k <= 0 or not samples:
            return state, []
        seen = np.asarray(state["seen"], np.float64).copy()
        for s in samples:
            for t in s["terms"]:
                seen[TERMS.index(t)] += k / self.steps_per_batch
        loss = self.evaluate(state, None, samples)["loss"]
        return {"seen": seen}, [loss] * int(k)

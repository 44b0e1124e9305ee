"""The image-blind baseline: what a model that never looks at the image scores on an evaluation set.

A VLM's metric means little without it: an answer that is right for most scenes whatever the image shows,
or a caption that is likelier than its hard negatives from its words alone, scores above the floor without
any spatial understanding. Every evaluation therefore reports this number beside the VLM's.

- PaliGemma (mean rubric score 1-5): the best constant answer. The rubric sees only the set of spatial terms
  an answer states, so the 63 non-empty subsets of the six terms cover every possible constant answer
  (stating all six scores 3 on any set: the rubric's penalties stop at one point each).
- CLIP / NegCLIP (the true caption strictly above both hard negatives, chance 1/3): max(chance, a text-only
  prior), the prior scoring each of the three texts on its own, as CLIP does, by how often that caption is
  true in the training rooms.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from rls3_jax import prompts
from rls3_jax.config import RUBRIC_VLMS
from rls3_jax.scoring import rubric_score

CHANCE = 1.0 / 3.0  # one caption and two hard negatives
PRIOR_SCENES = 20_000  # x 6 ordered object pairs: about 65 captions per (located, reference, term set) cell
PRIOR_SEED = 3_000_017  # not the validation or test set's seed: the prior is fitted on other scenes
PRIOR_ALPHA = 1.0  # additive (Laplace) smoothing of the caption counts


# ---------------------------------------------------------------------------------------------- PaliGemma


def constant_answers() -> list[tuple[frozenset[str], str]]:
    """Every non-empty subset of the spatial terms with an answer stating exactly it, fewest terms first."""
    subsets = (frozenset(c) for r in range(1, len(prompts.TERMS) + 1) for c in itertools.combinations(prompts.TERMS, r))
    return [(subset, prompts.relation_phrase(sorted(subset))) for subset in subsets]


def paligemma_blind(samples: Sequence[dict]) -> dict:
    """The best constant answer on `samples`: {"metric": its mean rubric score, "answer": its text, ...}.

    Scored with the rubric itself (on the answer text, as the learner scores a decoded answer); a tie goes to
    the answer with fewer terms, then to the earlier one in TERMS order. The rubric takes off at most one
    point for opposites and one for extras, so stating all six terms scores 3 on every sample; the best
    answer without a term and its opposite is returned beside it ("consistent_metric", "consistent_answer").
    """
    if not samples:
        raise ValueError("paligemma_blind needs at least one sample")
    best = {"metric": -math.inf, "answer": None, "consistent_metric": -math.inf, "consistent_answer": None}
    for subset, answer in constant_answers():
        score = float(np.mean([rubric_score(s["terms"], answer) for s in samples]))
        if score > best["metric"]:
            best.update(metric=score, answer=answer)
        consistent = not any(prompts.OPPOSITE[t] in subset for t in subset)
        if consistent and score > best["consistent_metric"]:
            best.update(consistent_metric=score, consistent_answer=answer)
    return best


# -------------------------------------------------------------------------------------------- CLIP prior


class TextPrior:
    """A text-only scorer: a caption's score is its smoothed count among the training captions.

    The count of a caption string is the count of its (located object, reference object, term set): the
    caption template is one-to-one. All texts share the smoothed probability's normaliser, so ranking the
    three texts of a sample needs only count + alpha.
    """

    def __init__(self, counts: Counter, alpha: float = PRIOR_ALPHA):
        self.counts, self.alpha = Counter(counts), float(alpha)

    @classmethod
    def from_metadata(cls, metadatas: Iterable[dict], alpha: float = PRIOR_ALPHA) -> TextPrior:
        """Count the caption of every ordered object pair of every sample (all pairs: the same distribution as
        the evaluation's one random pair per sample, with six times the counts)."""
        counts = Counter()
        for metadata in metadatas:
            for located, reference in itertools.permutations(range(len(metadata["objects"])), 2):
                counts[prompts.describe_pair(metadata, located, reference)["caption"]] += 1
        return cls(counts, alpha)

    def score(self, text: str) -> float:
        return self.counts.get(text, 0) + self.alpha

    def credits(self, samples: Sequence[dict]) -> np.ndarray:
        """Per sample: 1/k when the caption is among the k top-scoring of its three texts, else 0.

        The hard negatives come from the CLIP learner's own evaluation function (the same term-swap rule),
        and splitting ties makes a constant scorer worth exactly 1/3.
        """
        from rls3_jax.vlm.clip.contrastive import hard_negative_texts

        term_swapped, object_swapped = hard_negative_texts(samples)
        credits = np.zeros(len(samples))
        for i, texts in enumerate(zip([s["caption"] for s in samples], term_swapped, object_swapped)):
            scores = [self.score(t) for t in texts]
            top = [j for j, v in enumerate(scores) if v == max(scores)]
            credits[i] = 1.0 / len(top) if 0 in top else 0.0
        return credits

    def accuracy(self, samples: Sequence[dict]) -> float:
        if not samples:
            raise ValueError("TextPrior.accuracy needs at least one sample")
        return float(self.credits(samples).mean())


@functools.lru_cache(maxsize=4)
def training_prior(scenes: int = PRIOR_SCENES, seed: int = PRIOR_SEED) -> TextPrior:
    """The prior fitted on the stand-in simulator's training rooms (metadata only, no rendering; ~2 s).

    The same for every run and never from the test rooms. With --env unity it is still the stand-in's rooms:
    the only metadata there is to draw without a player; a blind model's score either way.
    """
    import sim

    return TextPrior.from_metadata(sim.generate_metadata("train", scenes, seed))


def clip_blind(samples: Sequence[dict], prior: TextPrior | None = None) -> dict:
    """{"metric": max(chance, prior accuracy), "text_prior": the prior's accuracy, "chance": 1/3}.

    A blind model can always score chance by ignoring the texts too, hence the max.
    """
    accuracy = (prior or training_prior()).accuracy(samples)
    return {"metric": max(CHANCE, accuracy), "text_prior": accuracy, "chance": CHANCE}


def blind_metric(vlm: str, samples: Sequence[dict]) -> dict:
    """The image-blind baseline of `vlm`'s metric on `samples` (see the module docstring)."""
    if vlm in RUBRIC_VLMS:
        return paligemma_blind(samples)
    if vlm in ("clip", "negclip"):
        return clip_blind(samples)
    raise ValueError(f"no image-blind baseline for vlm {vlm!r}")

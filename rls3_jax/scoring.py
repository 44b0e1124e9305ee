"""The PaliGemma rubric (paper section 4.4) and the extrinsic rewards of Eq. 3."""

from __future__ import annotations

import re
from collections.abc import Iterable

from rls3_jax.prompts import OPPOSITE

# Longer phrases first so that "in front of" is not also read as something shorter.
_PATTERNS = (
    ("above", r"\b(?:above|over|on top of|atop)\b"),
    ("below", r"\b(?:below|under|underneath|beneath)\b"),
    ("behind", r"\b(?:behind|in back of)\b"),
    ("in front", r"\b(?:in front)\b"),
    ("left", r"\bleft\b"),
    ("right", r"\bright\b"),
)
_COMPILED = tuple((term, re.compile(pattern)) for term, pattern in _PATTERNS)
# (true terms, correct terms) -> score; any case where all are correct scores 5.
_TABLE = {(3, 2): 4, (2, 1): 3, (3, 1): 2}


def parse_terms(answer_text: str) -> frozenset[str]:
    """The spatial terms a free-form answer states."""
    text = " ".join(answer_text.lower().split())
    return frozenset(term for term, pattern in _COMPILED if pattern.search(text))


def rubric_score(truth_terms: Iterable[str], answer_text: str) -> int:
    """Score 1..5: fraction of true terms stated, minus a point for an opposite term and one for extras."""
    truth = frozenset(truth_terms)
    if not truth:
        raise ValueError("truth_terms is empty: every caption has at least one spatial term")
    parsed = parse_terms(answer_text)
    correct = len(truth & parsed)
    if correct == len(truth):
        score = 5
    elif correct == 0:
        score = 1
    else:
        score = _TABLE[(len(truth), correct)]
    if any(OPPOSITE[t] in parsed for t in truth):
        score -= 1
    if len(parsed) > len(truth):
        score -= 1
    return max(score, 1)


def paligemma_reward(score: float) -> float:
    """J2 = (6 - S)^2: a low rubric score is a high reward for the data-generating agent."""
    return (6.0 - score) ** 2


def clip_reward(loss: float) -> float:
    """J2 = L^2 with L the contrastive loss on the episode's batch."""
    return loss**2

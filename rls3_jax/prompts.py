"""Angle-based prompt generation (paper section 4.3).

Coordinates follow Unity's convention: left-handed, y up. With the camera's forward vector projected on
the ground, f, the right vector is r = (f_z, 0, -f_x). The offset d = located - reference is cut into
eight 45-degree horizontal regions (0 = behind, i.e. farther from the camera) and three vertical bands
(|elevation| <= 20 degrees: horizontal terms only; <= 75: vertical and horizontal; above: vertical only),
so a caption holds one to three spatial terms.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

TERMS = ("above", "below", "behind", "in front", "left", "right")
OPPOSITE = {
    "above": "below",
    "below": "above",
    "behind": "in front",
    "in front": "behind",
    "left": "right",
    "right": "left",
}
# Horizontal regions, counter-clockwise from "behind" when seen from above in Unity's left-handed frame.
_REGIONS = (
    ("behind",),
    ("behind", "right"),
    ("right",),
    ("in front", "right"),
    ("in front",),
    ("in front", "left"),
    ("left",),
    ("behind", "left"),
)
HORIZONTAL_ONLY_DEG = 20.0
VERTICAL_ONLY_DEG = 75.0
# Caption order: vertical first, then depth, then left/right.
_ORDER = {"above": 0, "below": 0, "behind": 1, "in front": 1, "left": 2, "right": 2}
_PHRASE = {
    "above": "above",
    "below": "below",
    "behind": "behind",
    "in front": "in front",
    "left": "to the left",
    "right": "to the right",
}
QUESTION = "What is the position of {located} relative to {reference}?"


def horizontal_angle(
    located: Sequence[float], reference: Sequence[float], camera_forward: Sequence[float]
) -> float:
    """Angle of the offset in degrees in [0, 360): 0 = away from the camera, 90 = to its right."""
    dx, dz = located[0] - reference[0], located[2] - reference[2]
    fx, fz = camera_forward[0], camera_forward[2]
    norm = math.hypot(fx, fz)
    if norm == 0.0:
        raise ValueError("camera_forward has no horizontal component; the horizontal regions are undefined")
    fx, fz = fx / norm, fz / norm
    along = dx * fx + dz * fz
    across = dx * fz - dz * fx  # d . r with r = (f_z, 0, -f_x)
    return math.degrees(math.atan2(across, along)) % 360.0


def elevation_angle(located: Sequence[float], reference: Sequence[float]) -> float:
    dx, dy, dz = (located[i] - reference[i] for i in range(3))
    return math.degrees(math.atan2(dy, math.hypot(dx, dz)))


def spatial_terms(located, reference, camera_forward) -> tuple[str, ...]:
    """Spatial terms placing `located` relative to `reference`, in caption order (1 to 3 terms)."""
    located = [float(v) for v in located]
    reference = [float(v) for v in reference]
    camera_forward = [float(v) for v in camera_forward]
    elevation = elevation_angle(located, reference)
    vertical = ("above",) if elevation > 0 else ("below",)
    if abs(elevation) > VERTICAL_ONLY_DEG:
        return vertical
    region = int(math.floor((horizontal_angle(located, reference, camera_forward) + 22.5) / 45.0)) % 8
    horizontal = _REGIONS[region]
    if abs(elevation) <= HORIZONTAL_ONLY_DEG:
        return horizontal
    return vertical + horizontal


def order_terms(terms: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(terms, key=lambda t: _ORDER[t]))


def relation_phrase(terms: Sequence[str]) -> str:
    """'above, behind and to the left of' / 'behind' / 'below and in front of'."""
    terms = order_terms(terms)
    if not terms:
        raise ValueError("a caption needs at least one spatial term")
    words = [_PHRASE[t] for t in terms]
    joined = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    if terms[-1] in ("in front", "left", "right"):
        joined += " of"
    return joined


def caption(located_name: str, reference_name: str, terms: Sequence[str]) -> str:
    """'The small pot is above, behind and to the left of the yellow bowl.'"""
    return f"The {located_name} is {relation_phrase(terms)} the {reference_name}."


def question(located_name: str, reference_name: str) -> str:
    """The PaliGemma question; the caption is its answer."""
    return QUESTION.format(located=f"the {located_name}", reference=f"the {reference_name}")


def term_swapped_caption(located_name: str, reference_name: str, terms: Sequence[str], index: int = 0) -> str:
    """Hard negative: the caption with one spatial term (terms[index]) replaced by its opposite."""
    terms = list(order_terms(terms))
    terms[index % len(terms)] = OPPOSITE[terms[index % len(terms)]]
    return caption(located_name, reference_name, terms)


def object_swapped_caption(located_name: str, reference_name: str, terms: Sequence[str]) -> str:
    """Hard negative: the caption with the two objects' places swapped."""
    return caption(reference_name, located_name, terms)


def hard_negatives(
    located_name: str, reference_name: str, terms: Sequence[str], rng: random.Random | None = None
):
    """NegCLIP's two hard negatives: (term swapped, objects swapped)."""
    index = rng.randrange(len(terms)) if rng is not None else 0
    return (
        term_swapped_caption(located_name, reference_name, terms, index),
        object_swapped_caption(located_name, reference_name, terms),
    )


def describe_pair(metadata: dict, located_index: int, reference_index: int) -> dict:
    """Caption, question and terms for two objects of a sample's metadata (see sim.metadata)."""
    objects = metadata["objects"]
    located, reference = objects[located_index], objects[reference_index]
    forward = metadata["camera"]["forward"]
    terms = spatial_terms(located["position"], reference["position"], forward)
    return {
        "located": located["name"],
        "reference": reference["name"],
        "terms": terms,
        "caption": caption(located["name"], reference["name"], terms),
        "question": question(located["name"], reference["name"]),
    }

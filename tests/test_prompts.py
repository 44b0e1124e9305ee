import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rls3_jax import prompts
from rls3_jax.prompts import caption, hard_negatives, question, spatial_terms
from rls3_jax.scoring import parse_terms

FORWARD = (0.0, -0.5, 1.0)  # camera looking down at the scene along +z


def at(angle_deg, elevation_deg=0.0, distance=1.0):
    """A point at a horizontal angle (0 = away from the camera, 90 = camera's right) and an elevation."""
    a, e = math.radians(angle_deg), math.radians(elevation_deg)
    horizontal = distance * math.cos(e)
    # right = (f_z, 0, -f_x) = (1, 0, 0) for forward +z
    return (horizontal * math.sin(a), distance * math.sin(e), horizontal * math.cos(a))


@pytest.mark.parametrize(
    "angle,terms",
    [
        (0, ("behind",)),
        (45, ("behind", "right")),
        (90, ("right",)),
        (135, ("in front", "right")),
        (180, ("in front",)),
        (225, ("in front", "left")),
        (270, ("left",)),
        (315, ("behind", "left")),
        (20, ("behind",)),
        (25, ("behind", "right")),
        (340, ("behind",)),
        (-70, ("left",)),
    ],
)
def test_eight_horizontal_regions(angle, terms):
    assert spatial_terms(at(angle), (0, 0, 0), FORWARD) == terms


def test_regions_follow_the_camera_not_the_world():
    # A camera looking along +x: its right is -z (left-handed, y up: r = (f_z, 0, -f_x)).
    forward = (1.0, -0.3, 0.0)
    assert spatial_terms((2, 0, 0), (0, 0, 0), forward) == ("behind",)
    assert spatial_terms((0, 0, -2), (0, 0, 0), forward) == ("right",)
    assert spatial_terms((0, 0, 2), (0, 0, 0), forward) == ("left",)
    assert spatial_terms((-2, 0, 0), (0, 0, 0), forward) == ("in front",)


@pytest.mark.parametrize(
    "elevation,terms",
    [
        (0, ("right",)),
        (19.9, ("right",)),
        (-19.9, ("right",)),
        (20.5, ("above", "right")),
        (-20.5, ("below", "right")),
        (74.9, ("above", "right")),
        (-74.9, ("below", "right")),
        (75.5, ("above",)),
        (-75.5, ("below",)),
        (90, ("above",)),
    ],
)
def test_elevation_thresholds(elevation, terms):
    assert spatial_terms(at(90, elevation), (0, 0, 0), FORWARD) == terms


def test_three_terms_and_offsets_relative_to_reference():
    reference = (3.0, 0.8, -1.0)
    located = tuple(r + d for r, d in zip(reference, at(315, 40)))
    assert spatial_terms(located, reference, FORWARD) == ("above", "behind", "left")


def test_captions_in_natural_english():
    assert caption("small pot", "yellow bowl", ("above", "behind", "left")) == (
        "The small pot is above, behind and to the left of the yellow bowl."
    )
    assert caption("blender", "plate", ("below", "in front")) == "The blender is below and in front of the plate."
    assert caption("cup", "plate", ("behind",)) == "The cup is behind the plate."
    assert caption("cup", "plate", ("right", "above")) == "The cup is above and to the right of the plate."
    assert question("small pot", "yellow bowl") == "What is the position of the small pot relative to the yellow bowl?"


def test_hard_negatives():
    terms = ("above", "behind", "left")
    swapped, objects = hard_negatives("small pot", "yellow bowl", terms, random.Random(0))
    assert objects == "The yellow bowl is above, behind and to the left of the small pot."
    assert parse_terms(swapped) != set(terms)
    assert len(parse_terms(swapped) & set(terms)) == 2  # exactly one term flipped
    flipped = (set(parse_terms(swapped)) - set(terms)).pop()
    assert prompts.OPPOSITE[flipped] in terms


def test_degenerate_camera_is_an_error():
    with pytest.raises(ValueError, match="camera_forward"):
        spatial_terms((1, 0, 0), (0, 0, 0), (0, -1, 0))


coordinate = st.floats(-5, 5, allow_nan=False, allow_infinity=False)
point = st.tuples(coordinate, coordinate, coordinate)
forward = st.tuples(st.floats(-1, 1), st.floats(-1, 0), st.floats(-1, 1)).filter(lambda f: math.hypot(f[0], f[2]) > 1e-3)


@settings(max_examples=300, deadline=None)
@given(point, point, forward)
def test_fuzz_captions_parse_back_to_their_terms(a, b, f):
    if a == b:
        return
    terms = spatial_terms(a, b, f)
    assert 1 <= len(terms) <= 3
    assert len(set(terms)) == len(terms)
    assert not any(prompts.OPPOSITE[t] in terms for t in terms)
    assert parse_terms(caption("small pot", "yellow bowl", terms)) == set(terms)

"""Mirrored fine-tuning samples: the flipped image's true caption is the original's with left and right swapped."""

import itertools
import random

import numpy as np
import pytest

import sim
from rls3_jax import mirror, prompts
from rls3_jax.vlm.paligemma import detection


@pytest.fixture(scope="module")
def scenes():
    images, metadata = sim.generate_samples("train", 12, seed=5, image_size=32)
    test_images, test_metadata = sim.generate_samples("test", 12, seed=6, image_size=32)
    return np.concatenate([images, test_images]), metadata + test_metadata


def test_terms_swap_left_and_right_only():
    assert mirror.mirrored_terms(("above", "behind", "left")) == ("above", "behind", "right")
    assert mirror.mirrored_terms(("in front", "right")) == ("in front", "left")
    assert mirror.mirrored_terms(("below",)) == ("below",)
    sample = prompts.describe_pair(
        {"objects": [{"name": "cup", "position": [1.0, 1.0, 0.0]}, {"name": "plate", "position": [0.0, 0.5, 0.0]}],
         "camera": {"forward": [0.0, 0.0, 1.0]}}, 0, 1)
    assert sample["caption"] == "The cup is above and to the right of the plate."
    assert mirror.mirrored_sample(sample)["caption"] == "The cup is above and to the left of the plate."
    assert mirror.mirrored_sample(sample)["question"] == sample["question"]


def test_reflected_scene_has_the_swapped_caption_for_every_pair(scenes):
    _, metadata = scenes
    for md in metadata:
        reflected = mirror.mirrored_metadata(md)
        for a, b in itertools.permutations(range(3), 2):
            original = prompts.describe_pair(md, a, b)
            assert prompts.describe_pair(reflected, a, b)["terms"] == mirror.mirrored_terms(original["terms"])


def test_reflected_scene_projects_to_the_flipped_columns(scenes):
    """The simulator's own camera sees the reflected objects where the flipped image shows them."""
    _, metadata = scenes
    for md in metadata:
        centres = np.array([o["position"] for o in md["objects"]])
        reflected = np.array([o["position"] for o in mirror.mirrored_metadata(md)["objects"]])
        before, after = detection.project(md, centres), detection.project(md, reflected)
        np.testing.assert_allclose(after[:, 1], 1.0 - before[:, 1], atol=1e-9)
        np.testing.assert_allclose(after[:, [0, 2]], before[:, [0, 2]], atol=1e-9)


def test_with_mirrors_appends_flipped_images_and_swapped_samples(scenes):
    images, metadata = scenes
    rng = random.Random(0)
    samples = [dict(prompts.describe_pair(m, *rng.sample(range(3), 2)), metadata=m) for m in metadata]
    both_images, both = mirror.with_mirrors(images, samples)
    n = len(samples)
    assert both_images.shape == (2 * n, *images.shape[1:])
    np.testing.assert_array_equal(both_images[:n], images)
    np.testing.assert_array_equal(both_images[n:], images[:, :, ::-1])
    assert both[:n] == samples
    assert [s["terms"] for s in both[n:]] == [mirror.mirrored_terms(s["terms"]) for s in samples]
    assert any("left" in s["terms"] or "right" in s["terms"] for s in samples)
    with pytest.raises(ValueError, match="images for"):
        mirror.with_mirrors(images[:3], samples)


def test_mirrored_boxes_are_the_original_boxes_flipped(scenes):
    """A mirrored sample's detection boxes (also in its grounded answer) are the original boxes flipped left to
    right, as the image is, not the boxes of the reflected positions; mirroring twice gives the original back."""
    images, metadata = scenes
    for md in metadata:
        reflected = mirror.mirrored_metadata(md)
        assert reflected["mirrored"] and not mirror.mirrored_metadata(reflected)["mirrored"]
        for k in range(len(md["objects"])):
            y0, x0, y1, x1 = detection.object_box(md, k)
            np.testing.assert_allclose(detection.object_box(reflected, k), [y0, 1 - x1, y1, 1 - x0], atol=1e-12)
            np.testing.assert_allclose(detection.object_box(mirror.mirrored_metadata(reflected), k),
                                       [y0, x0, y1, x1], atol=1e-9)
    sample = dict(prompts.describe_pair(metadata[0], 0, 1), metadata=metadata[0])
    flipped = mirror.mirrored_sample(sample)
    boxes = [detection.parse_box(part) for part in detection.grounded_answer(flipped).split(" ; ")[:2]]
    originals = [detection.parse_box(part) for part in detection.grounded_answer(sample).split(" ; ")[:2]]
    for box, original in zip(boxes, originals):
        np.testing.assert_allclose(box[[1, 3]], 1 - original[[3, 1]], atol=2 / 1024)

"""Mirrored fine-tuning samples: the image flipped left to right, "left" and "right" swapped in its text.

The caption's terms come from the camera frame (`rls3_jax.prompts`): the offset between the two objects split
into depth along the camera's ground-projected forward vector, a sideways part along its right vector, and
the elevation. Reflecting the scene in the camera's vertical plane, which is what flipping a pinhole image
without roll about its centre column shows, negates the sideways part only: the eight horizontal regions
map onto their mirror images (the region boundaries at +-22.5 + 45k degrees are symmetric), so the mirrored
image's true caption is the original one with left and right exchanged, and nothing else changes.

A fine-tuning set with both versions of every image cannot be fitted by answering left or right from the
room or the object names: the same words come with both answers, and only the image says which.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rls3_jax import prompts

_SWAP = {"left": "right", "right": "left"}


def mirrored_terms(terms: Sequence[str]) -> tuple[str, ...]:
    return prompts.order_terms(_SWAP.get(t, t) for t in terms)


def mirrored_sample(sample: dict) -> dict:
    """The sample as seen in the flipped image: terms and caption swapped (and metadata reflected, if any)."""
    terms = mirrored_terms(sample["terms"])
    out = dict(sample, terms=terms, caption=prompts.caption(sample["located"], sample["reference"], terms))
    if "metadata" in sample:  # CLIP's every-pair captions are built from it
        out["metadata"] = mirrored_metadata(sample["metadata"])
    return out


def mirrored_metadata(metadata: dict) -> dict:
    """Object positions reflected in the camera's vertical plane (p - 2 ((p - c) . r) r, r the right vector).

    `mirrored` marks the result (and is cleared by mirroring back): an object's box in the flipped image is its
    original box flipped, not the box of its reflected position (detection.object_box)."""
    forward, centre = metadata["camera"]["forward"], metadata["camera"]["position"]
    norm = float(np.hypot(forward[0], forward[2]))
    right = np.array([forward[2], 0.0, -forward[0]]) / norm
    objects = []
    for obj in metadata["objects"]:
        p = np.asarray(obj["position"], np.float64)
        reflected = p - 2.0 * float(np.dot(p - np.asarray(centre, np.float64), right)) * right
        objects.append(dict(obj, position=[float(v) for v in reflected]))
    return dict(metadata, objects=objects, mirrored=not metadata.get("mirrored", False))


def with_mirrors(images: np.ndarray, samples: Sequence[dict]) -> tuple[np.ndarray, list[dict]]:
    """The set followed by its mirror image: 2N images [2N, H, W, C] (flipped along W) and 2N samples."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"with_mirrors expects images [N, H, W, C], got shape {images.shape}")
    if len(images) != len(samples):
        raise ValueError(f"{len(images)} images for {len(samples)} samples")
    flipped = images[:, :, ::-1]
    return np.concatenate([images, flipped]), list(samples) + [mirrored_sample(s) for s in samples]

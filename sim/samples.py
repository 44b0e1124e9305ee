"""Random valid samples (image + metadata) of a split's scenes: the validation and test sets."""

from __future__ import annotations

import random

import numpy as np

from sim import geometry
from sim.env import make_metadata, place_objects
from sim.objects import OBJECTS
from sim.render import image_shape, view
from sim.scenes import scenes_for_split


def _placements(split: str, n: int, seed: int):
    """Yield (scene, catalogue ids, positions, moved slot) for n samples, drawing from one stream under seed.

    Both generators below consume the stream in this order, so the metadata of `generate_metadata` equals
    that of `generate_samples` for the same arguments (rendering draws no random numbers).
    """
    scenes = scenes_for_split(split)
    rng = random.Random(int(seed))
    for i in range(int(n)):
        scene = scenes[i % len(scenes)]
        ids = rng.sample(range(len(OBJECTS)), geometry.N_ACTIVE)
        positions, _ = place_objects(rng, scene, ids)
        yield scene, ids, positions, rng.randrange(geometry.N_ACTIVE)


def _check_n(who: str, split: str, n: int) -> None:
    scenes_for_split(split)  # an unknown split is an error before anything is drawn
    if int(n) < 0:
        raise ValueError(f"{who}: n must be >= 0, got {n}")


def generate_samples(split: str, n: int, seed: int, image_size=224):
    """n random valid scenes of `split`, cycling its scenes: (images uint8 [n, H, W, 3], list of metadata).

    Each sample draws three distinct catalogue objects and random valid resting places; `moved` is a random
    slot. Deterministic under `seed`.
    """
    _check_n("generate_samples", split, n)
    h, w = image_shape(image_size)
    images = np.empty((int(n), h, w, 3), dtype=np.uint8)
    metadatas = []
    for i, (scene, ids, positions, moved) in enumerate(_placements(split, n, seed)):
        images[i] = view(scene, h, w).render(list(zip(ids, positions)))
        metadatas.append(make_metadata(scene, split, moved, ids, positions))
    return images, metadatas


def generate_metadata(split: str, n: int, seed: int) -> list[dict]:
    """The metadata `generate_samples(split, n, seed)` returns, without rendering an image.

    For statistics over many scenes (the image-blind baseline's text prior) where images are not needed:
    placing objects costs far less than rendering them.
    """
    _check_n("generate_metadata", split, n)
    return [make_metadata(scene, split, moved, ids, positions)
            for scene, ids, positions, moved in _placements(split, n, seed)]

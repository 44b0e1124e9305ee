"""Random valid samples (image + metadata) of a split's scenes: the validation and test sets."""

from __future__ import annotations

import random

import numpy as np

from sim import geometry
from sim.env import make_metadata, place_objects
from sim.objects import OBJECTS
from sim.render import image_shape, view
from sim.scenes import scenes_for_split


def generate_samples(split: str, n: int, seed: int, image_size=224):
    """n random valid scenes of `split`, cycling its scenes: (images uint8 [n, H, W, 3], list of metadata).

    Each sample draws three distinct catalogue objects and random valid resting places; `moved` is a random
    slot. Deterministic under `seed`.
    """
    scenes = scenes_for_split(split)
    if int(n) < 0:
        raise ValueError(f"generate_samples: n must be >= 0, got {n}")
    h, w = image_shape(image_size)
    rng = random.Random(int(seed))
    images = np.empty((int(n), h, w, 3), dtype=np.uint8)
    metadatas = []
    for i in range(int(n)):
        scene = scenes[i % len(scenes)]
        ids = rng.sample(range(len(OBJECTS)), geometry.N_ACTIVE)
        positions, _ = place_objects(rng, scene, ids)
        images[i] = view(scene, h, w).render(list(zip(ids, positions)))
        metadatas.append(make_metadata(scene, split, rng.randrange(geometry.N_ACTIVE), ids, positions))
    return images, metadatas

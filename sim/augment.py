"""Scene and image augmentation for base pre-training only: varied copies of the training rooms.

`jitter_scene` returns a new `Scene` (the scene itself is never changed) with another camera pose near the
scene's own (an orbit around the furniture, another height; reframed as the scenes frame theirs), optionally
mirrored left to right, and with other wall, floor and furniture colours. `photometric` varies brightness,
contrast, colour balance and adds noise to rendered uint8 images. `generate_augmented_samples` renders
random valid samples of such variants, with each object's place in its own image.

None of this is used by the environment, the validation or the test sets; they render the scenes as they are.
"""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np

from sim import geometry
from sim.env import make_metadata, place_objects
from sim.objects import OBJECTS
from sim.render import View
from sim.scenes import Box, Scene, Surface, frame_camera, scenes_for_split


def _surface_target(scene: Scene) -> tuple[float, float, float]:
    xs = [s.center[0] for s in scene.surfaces]
    zs = [s.center[2] for s in scene.surfaces]
    ys = [s.center[1] for s in scene.surfaces]
    return (0.5 * (min(xs) + max(xs)), float(np.mean(ys)), 0.5 * (min(zs) + max(zs)))


def mirror_scene(scene: Scene) -> Scene:
    """The scene mirrored in x (furniture, surfaces and camera; yaw negated)."""
    boxes = tuple(dataclasses.replace(b, center=(-b.center[0], b.center[1], b.center[2])) for b in scene.boxes)
    surfaces = tuple(
        dataclasses.replace(s, center=(-s.center[0], s.center[1], s.center[2])) for s in scene.surfaces
    )
    (px, py, pz), (pitch, yaw, roll) = scene.camera_position, scene.camera_rotation
    return dataclasses.replace(
        scene, boxes=boxes, surfaces=surfaces, camera_position=(-px, py, pz), camera_rotation=(pitch, -yaw, roll)
    )


def _colour(rng: random.Random, base, strength: float):
    """`base` with per-channel gains, or (with probability strength / 2) a random colour."""
    if rng.random() < strength / 2:
        return tuple(rng.uniform(0.15, 0.95) for _ in range(3))
    gain = rng.uniform(1 - strength, 1 + strength)
    return tuple(min(1.0, max(0.05, c * gain * rng.uniform(1 - strength / 2, 1 + strength / 2))) for c in base)


def jitter_scene(
    scene: Scene,
    rng: random.Random,
    *,
    yaw_deg: float = 35.0,
    height: float = 0.2,
    angle_deg: float = 2.0,
    mirror: float = 0.5,
    colour: float = 0.35,
) -> Scene:
    """A variant of `scene`: camera orbited by up to +-yaw_deg around the furniture's centre, raised or
    lowered by up to `height` m, reframed (`frame_camera`) and turned by up to +-angle_deg; mirrored with
    probability `mirror`; wall, floor and furniture colours varied with `colour` (0 keeps them)."""
    if rng.random() < mirror:
        scene = mirror_scene(scene)
    if colour > 0:
        # furniture pieces share colours across their boxes: map each distinct colour to one new colour
        mapping: dict = {}
        boxes = []
        for b in scene.boxes:
            if b.colour not in mapping:
                mapping[b.colour] = _colour(rng, b.colour, colour)
            boxes.append(dataclasses.replace(b, colour=mapping[b.colour]))
        f0, f1 = scene.floor_colours
        floor0 = _colour(rng, f0, colour)
        scale = [b / max(a, 1e-3) for a, b in zip(f0, floor0)]
        floor1 = tuple(min(1.0, c * s) for c, s in zip(f1, scale))
        if rng.random() < 0.3:  # high-contrast checker
            floor1 = tuple(min(1.0, max(0.05, c * rng.uniform(0.4, 1.6))) for c in floor0)
        scene = dataclasses.replace(
            scene, boxes=tuple(boxes), wall_colour=_colour(rng, scene.wall_colour, colour), floor_colours=(floor0, floor1)
        )
    if yaw_deg > 0 or height > 0:
        target = _surface_target(scene)
        px, py, pz = scene.camera_position
        dx, dz = px - target[0], pz - target[2]
        a = math.radians(rng.uniform(-yaw_deg, yaw_deg))
        ca, sa = math.cos(a), math.sin(a)
        rx, ry, rz = scene.room_half
        pos = (
            max(-rx + 0.3, min(rx - 0.3, target[0] + ca * dx + sa * dz)),
            py + rng.uniform(-height, height),
            max(-rz + 0.3, min(rz - 0.3, target[2] - sa * dx + ca * dz)),
        )
        look = (target[0] + rng.uniform(-0.15, 0.15), target[1] - 0.1, target[2] + rng.uniform(-0.15, 0.15))
        pos, rot = frame_camera(pos, look, scene.surfaces, scene.room_half)
        rot = (rot[0] + rng.uniform(-angle_deg, angle_deg), rot[1] + rng.uniform(-angle_deg, angle_deg), 0.0)
        scene = dataclasses.replace(scene, camera_position=tuple(pos), camera_rotation=rot)
    return scene


def photometric(images: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """uint8 images [N, H, W, 3] with random brightness, contrast, per-channel gain, gamma and noise."""
    x = images.astype(np.float32) / 255.0
    n = len(x)
    s = strength
    brightness = rng.uniform(1 - 0.3 * s, 1 + 0.3 * s, (n, 1, 1, 1))
    channel = rng.uniform(1 - 0.12 * s, 1 + 0.12 * s, (n, 1, 1, 3))
    contrast = rng.uniform(1 - 0.3 * s, 1 + 0.3 * s, (n, 1, 1, 1))
    gamma = np.exp(rng.uniform(-0.25 * s, 0.25 * s, (n, 1, 1, 1)))
    mean = x.mean((1, 2, 3), keepdims=True)
    x = (x - mean) * contrast + mean
    x = np.clip(x * brightness * channel, 0, 1) ** gamma
    x = x + rng.normal(0, 0.02 * s, x.shape) * (rng.random((n, 1, 1, 1)) < 0.5)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def object_places(camera: View, metadata: dict) -> list[tuple[float, float, float]]:
    """(column, row, 1 / distance) of each of the sample's objects in `camera`'s image."""
    out = []
    for obj in metadata["objects"]:
        row, column, distance = camera.project(obj["position"])
        out.append((column, row, 1.0 / distance))
    return out


def generate_augmented_samples(
    n: int, seed: int, image_size: int = 96, *, per_variant: int = 8, split: str = "train", **jitter
):
    """n random valid samples of `split`'s scenes, a new `jitter_scene` variant every `per_variant` samples
    of a scene: (images uint8 [n, H, W, 3], metadatas (the variant's camera), places [n][3] as in
    `object_places`). Deterministic under `seed`; no photometric change (see `photometric`)."""
    scenes = scenes_for_split(split)
    rng = random.Random(int(seed))
    images = np.empty((int(n), image_size, image_size, 3), dtype=np.uint8)
    metadatas, places = [], []
    views: dict = {}
    for i in range(int(n)):
        k = i % len(scenes)
        if i // len(scenes) % per_variant == 0:
            views[k] = View(jitter_scene(scenes[k], rng, **jitter), image_size, image_size)
        camera = views[k]
        ids = rng.sample(range(len(OBJECTS)), geometry.N_ACTIVE)
        positions, _ = place_objects(rng, camera.scene, ids)
        images[i] = camera.render(list(zip(ids, positions)))
        m = make_metadata(camera.scene, split, rng.randrange(geometry.N_ACTIVE), ids, positions)
        metadatas.append(m)
        places.append(object_places(camera, m))
    return images, metadatas, places


__all__ = ["Box", "Surface", "jitter_scene", "mirror_scene", "photometric", "generate_augmented_samples"]

"""Scene and image augmentation for base pre-training only: varied copies of the training rooms.

`random_room` builds a procedural room (random size, wall and floor colours, a random layout of tables,
cabinets and shelves of random sizes and heights, some decorative furniture, a standing person's camera from a
random side), so that a model trained on it and on the training rooms sees an unseen room as one more variant.
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
from sim.objects import OBJECT_HALF, OBJECTS
from sim.render import View
from sim.scenes import (
    Box,
    Scene,
    Surface,
    block,
    cabinet,
    chair,
    frame_camera,
    scenes_for_split,
    shelf,
    table,
)


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


def _random_colour(rng: random.Random, lo: float = 0.12, hi: float = 0.95):
    if rng.random() < 0.5:  # a muted, mostly grey or wood-like colour
        v = rng.uniform(lo, hi)
        tint = [rng.uniform(-0.12, 0.12) for _ in range(3)]
        return tuple(min(1.0, max(0.05, v + t)) for t in tint)
    return tuple(rng.uniform(lo, hi) for _ in range(3))


def random_room(rng: random.Random, index: int = 0, *, tries: int = 200) -> Scene:
    """A procedural room: 3-6 designated surfaces (tables, cabinets, wall shelves of random footprint and
    height, never overlapping from above), 0-2 decorative pieces, random colours and a framed camera looking
    at the furniture from the room's near side. `index` is the scene index the samples will carry."""
    rx, ry, rz = rng.uniform(2.4, 2.9), rng.uniform(1.35, 1.5), rng.uniform(2.5, 2.9)
    biggest = OBJECT_HALF[:, [0, 2]].max(0)
    while True:
        pieces, footprints = [], []
        n_surfaces = rng.randint(3, 6)
        for _ in range(tries):
            if len(pieces) == n_surfaces:
                break
            kind = rng.choices(("table", "cabinet", "shelf"), (0.4, 0.45, 0.15))[0]
            w = rng.uniform(0.45, 1.8)
            d = rng.uniform(0.36, 0.5) if kind == "shelf" else rng.uniform(0.45, 1.0)
            if kind == "shelf":  # against the back wall
                z1 = rz - rng.uniform(0.0, 0.05)
                z0, h = z1 - d, rng.uniform(1.15, 1.55)
            else:
                z0 = rng.uniform(0.1, rz - 0.15 - d)
                z1, h = z0 + d, rng.uniform(0.35, 1.0 if kind == "table" else 1.25)
            x0 = rng.uniform(-rx + 0.3, rx - 0.3 - w)
            x1 = x0 + w
            if any(x0 < b[1] + 0.03 and b[0] < x1 + 0.03 and z0 < b[3] + 0.03 and b[2] < z1 + 0.03
                   for b in footprints):
                continue
            colour = _random_colour(rng)
            x, z = (x0 + x1) / 2, (z0 + z1) / 2
            if kind == "table":
                piece = table("table", x, z, w, d, h, colour, legs=_random_colour(rng, 0.1, 0.7))
            elif kind == "cabinet":
                piece = cabinet("cabinet", x, z, w, d, h, colour, top=_random_colour(rng))
            else:
                piece = shelf("shelf", x, z, w, d, h, colour)
            pieces.append(piece)
            footprints.append((x0, x1, z0, z1))
        surfaces = [p[1] for p in pieces]
        if len(pieces) >= 3 and any(s.half[0] >= biggest[0] and s.half[1] >= biggest[1] for s in surfaces):
            break
    decorations = []
    for _ in range(rng.randint(0, 2)):
        for _ in range(50):
            if rng.random() < 0.5:
                w, d, h = rng.uniform(0.4, 1.0), rng.uniform(0.1, 0.7), rng.uniform(0.6, 1.9)
                x0, z0 = rng.uniform(-rx + 0.2, rx - 0.2 - w), rng.uniform(0.0, rz - 0.05 - d)
            else:
                w = d = 0.5
                h = 0.0
                x0, z0 = rng.uniform(-rx + 0.3, rx - 0.8), rng.uniform(0.0, rz - 0.6)
            if any(x0 < b[1] + 0.05 and b[0] < x0 + w + 0.05 and z0 < b[3] + 0.05 and b[2] < z0 + d + 0.05
                   for b in footprints):
                continue
            if h > 0:
                decorations.append(block(x0 + w / 2, 0.0, z0 + d / 2, w, h, d, _random_colour(rng)))
            else:
                decorations.append(chair(x0 + 0.25, z0 + 0.25, _random_colour(rng), rng.choice((-1, 1))))
            footprints.append((x0, x0 + w, z0, z0 + d))
            break
    boxes = [b for piece_boxes, _ in pieces + decorations for b in piece_boxes]
    xs = [x for s in surfaces for x in (s.center[0] - s.half[0], s.center[0] + s.half[0])]
    zs = [z for s in surfaces for z in (s.center[2] - s.half[1], s.center[2] + s.half[1])]
    target = (0.5 * (min(xs) + max(xs)) + rng.uniform(-0.2, 0.2), rng.uniform(0.45, 0.75),
              0.5 * (min(zs) + max(zs)) + rng.uniform(-0.2, 0.2))
    position = (rng.uniform(-1.5, 1.5), rng.uniform(1.6, 1.9), rng.uniform(-rz + 0.5, -1.0))
    pos, rot = frame_camera(position, target, surfaces, (rx, ry, rz))
    floor0 = _random_colour(rng, 0.2, 0.9)
    contrast = rng.uniform(0.5, 1.0) if rng.random() < 0.35 else rng.uniform(0.88, 0.97)
    floor1 = tuple(c * contrast for c in floor0)
    if rng.random() < 0.5:
        floor0, floor1 = floor1, floor0
    return Scene(
        index=int(index), name="procedural room", split="train", room_half=(rx, ry, rz),
        wall_colour=_random_colour(rng, 0.45, 0.95), floor_colours=(floor0, floor1), boxes=tuple(boxes),
        surfaces=tuple(surfaces), camera_position=tuple(pos), camera_rotation=rot,
    )


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
    n: int, seed: int, image_size: int = 96, *, per_variant: int = 8, split: str = "train",
    procedural: float = 0.0, **jitter
):
    """n random valid samples of `split`'s scenes, a new `jitter_scene` variant every `per_variant` samples
    of a scene (with probability `procedural` a `random_room` instead, jittered the same way): (images uint8
    [n, H, W, 3], metadatas (the variant's camera), places [n][3] as in `object_places`). Deterministic under
    `seed`; no photometric change (see `photometric`)."""
    scenes = scenes_for_split(split)
    rng = random.Random(int(seed))
    images = np.empty((int(n), image_size, image_size, 3), dtype=np.uint8)
    metadatas, places = [], []
    views: dict = {}
    for i in range(int(n)):
        k = i % len(scenes)
        if i // len(scenes) % per_variant == 0:
            room = random_room(rng, scenes[k].index) if procedural > 0 and rng.random() < procedural else scenes[k]
            views[k] = View(jitter_scene(room, rng, **jitter), image_size, image_size)
        camera = views[k]
        ids = rng.sample(range(len(OBJECTS)), geometry.N_ACTIVE)
        positions, _ = place_objects(rng, camera.scene, ids)
        images[i] = camera.render(list(zip(ids, positions)))
        m = make_metadata(camera.scene, split, rng.randrange(geometry.N_ACTIVE), ids, positions)
        metadatas.append(m)
        places.append(object_places(camera, m))
    return images, metadatas, places


__all__ = ["Box", "Surface", "random_room", "jitter_scene", "mirror_scene", "photometric", "generate_augmented_samples"]

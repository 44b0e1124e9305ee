"""Scene layouts: five training rooms and three unseen test rooms (paper section 4.1).

A scene is a room (floor at y = 0, four walls), furniture made of axis-aligned boxes, designated surfaces (the
top faces that objects may rest on, at several heights) and one camera placed like a standing person looking
down at the furniture. Coordinates follow Unity: left-handed, y up, metres; camera rotation is Euler degrees
(x = pitch, positive looks down; y = yaw, 0 looks along +z).

Designated surfaces of one scene never overlap when seen from above, so an object resting on a surface can
only touch the furniture under it; the test suite checks this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SPLITS = ("train", "val", "test")
FOV_Y_DEG = 60.0  # vertical field of view of every scene camera (square images: also horizontal)
FRAME_MARGIN = 0.07  # fraction of the image kept free around the designated surfaces


@dataclass(frozen=True)
class Box:
    center: tuple[float, float, float]
    half: tuple[float, float, float]
    colour: tuple[float, float, float]


@dataclass(frozen=True)
class Surface:
    name: str
    center: tuple[float, float, float]  # (x, height of the top face, z)
    half: tuple[float, float]  # half extent along x and z


@dataclass(frozen=True)
class Scene:
    index: int  # global scene index: 0-4 training scenes, 5-7 test scenes
    name: str
    split: str  # "train" or "test"
    room_half: tuple[float, float, float]  # walls at x = +-rx, z = +-rz; ceiling at y = 2 * ry
    wall_colour: tuple[float, float, float]
    floor_colours: tuple[tuple[float, float, float], tuple[float, float, float]]  # checker tiles
    boxes: tuple[Box, ...]
    surfaces: tuple[Surface, ...]
    camera_position: tuple[float, float, float]
    camera_rotation: tuple[float, float, float]
    move_scale: tuple[float, float, float] = (0.35, 0.5, 0.35)  # metres per unit action along x, y, z


def look_at(position, target) -> tuple[float, float, float]:
    """Unity Euler angles (pitch, yaw, 0) of a camera at `position` looking at `target`."""
    dx, dy, dz = (t - p for t, p in zip(target, position))
    yaw = math.degrees(math.atan2(dx, dz))
    pitch = -math.degrees(math.atan2(dy, math.hypot(dx, dz)))
    return (round(pitch, 3), round(yaw, 3), 0.0)


def camera_basis(rotation):
    """(forward, right, up) unit vectors of a camera with Unity Euler rotation (pitch, yaw, roll=0)."""
    pitch, yaw = math.radians(rotation[0]), math.radians(rotation[1])
    cp, sp, cy, sy = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    forward = (sy * cp, -sp, cy * cp)
    right = (cy, 0.0, -sy)
    up = (sy * sp, cp, cy * sp)
    return forward, right, up


# ---- furniture builders: each returns (boxes, surface or None) ----


def _darker(colour, f=0.7):
    return tuple(c * f for c in colour)


def table(name, x, z, w, d, h, colour, legs=None):
    """Table: a 5 cm top slab on four legs; its top is a designated surface."""
    legs = legs or _darker(colour)
    boxes = [Box((x, h - 0.025, z), (w / 2, 0.025, d / 2), colour)]
    for sx in (-1, 1):
        for sz in (-1, 1):
            lx, lz = x + sx * (w / 2 - 0.05), z + sz * (d / 2 - 0.05)
            boxes.append(Box((lx, (h - 0.05) / 2, lz), (0.03, (h - 0.05) / 2, 0.03), legs))
    return boxes, Surface(name, (x, h, z), (w / 2, d / 2))


def cabinet(name, x, z, w, d, h, colour, top=None):
    """Solid cabinet / counter with a 4 cm top of another colour; its top is a designated surface."""
    top = top or _darker(colour, 0.55)
    boxes = [
        Box((x, (h - 0.04) / 2, z), (w / 2, (h - 0.04) / 2, d / 2), colour),
        Box((x, h - 0.02, z), (w / 2 + 0.01, 0.02, d / 2 + 0.01), top),
    ]
    return boxes, Surface(name, (x, h, z), (w / 2, d / 2))


def shelf(name, x, z, w, d, h, colour):
    """Wall shelf: a 4 cm board with two brackets; its top is a designated surface."""
    boxes = [Box((x, h - 0.02, z), (w / 2, 0.02, d / 2), colour)]
    for sx in (-1, 1):
        boxes.append(
            Box((x + sx * (w / 2 - 0.06), h - 0.12, z + d / 2 - 0.1), (0.015, 0.08, 0.1), _darker(colour))
        )
    return boxes, Surface(name, (x, h, z), (w / 2, d / 2))


def block(x, y0, z, w, h, d, colour):
    """Decorative furniture box (not a surface): footprint w x d, from height y0 to y0 + h."""
    return [Box((x, y0 + h / 2, z), (w / 2, h / 2, d / 2), colour)], None


def chair(x, z, colour, facing=1):
    seat, _ = block(x, 0.42, z, 0.44, 0.05, 0.44, colour)
    back, _ = block(x, 0.47, z - facing * 0.2, 0.44, 0.45, 0.04, colour)
    legs = []
    for sx in (-1, 1):
        for sz in (-1, 1):
            legs += block(x + sx * 0.19, 0.0, z + sz * 0.19, 0.04, 0.42, 0.04, _darker(colour))[0]
    return seat + back + legs, None


def frame_camera(position, target, surfaces, room_half, headroom=0.35):
    """Back the camera away from `target` (keeping its direction) until every designated surface, and the
    space `headroom` above it, projects inside the image with FRAME_MARGIN to spare (or a wall is reached)."""
    tan = math.tan(math.radians(FOV_Y_DEG) / 2) * (1 - 2 * FRAME_MARGIN)
    points = [
        (s.center[0] + sx * s.half[0], s.center[1] + dy, s.center[2] + sz * s.half[1])
        for s in surfaces
        for sx in (-1, 1)
        for sz in (-1, 1)
        for dy in (0.0, headroom)
    ]
    factor = 1.0
    while True:
        pos = tuple(t + factor * (p - t) for p, t in zip(position, target))
        forward, right, up = camera_basis(look_at(pos, target))
        fits = True
        for q in points:
            d = [q[i] - pos[i] for i in range(3)]
            z = sum(a * b for a, b in zip(d, forward))
            x = sum(a * b for a, b in zip(d, right))
            y = sum(a * b for a, b in zip(d, up))
            if z <= 0 or abs(x) > tan * z or abs(y) > tan * z:
                fits = False
                break
        inside = all(abs(pos[i]) < room_half[i] - 0.15 for i in (0, 2)) and pos[1] < 2 * room_half[1] - 0.1
        if fits or not inside:
            return tuple(round(v, 3) for v in pos)
        factor += 0.02


def _scene(
    index,
    name,
    split,
    pieces,
    camera_position,
    target,
    room_half=(2.8, 1.4, 2.8),
    wall=(0.82, 0.80, 0.74),
    floor=((0.55, 0.42, 0.30), (0.50, 0.38, 0.27)),
    move_scale=(0.35, 0.5, 0.35),
):
    boxes, surfaces = [], []
    for piece_boxes, surface in pieces:
        boxes += piece_boxes
        if surface is not None:
            surfaces.append(surface)
    camera_position = frame_camera(camera_position, target, surfaces, room_half)
    return Scene(
        index=index,
        name=name,
        split=split,
        room_half=room_half,
        wall_colour=wall,
        floor_colours=floor,
        boxes=tuple(boxes),
        surfaces=tuple(surfaces),
        camera_position=camera_position,
        camera_rotation=look_at(camera_position, target),
        move_scale=move_scale,
    )


WOOD = (0.62, 0.42, 0.24)
DARK_WOOD = (0.38, 0.24, 0.14)
WHITE = (0.90, 0.90, 0.88)
GREY = (0.55, 0.56, 0.58)

TRAIN_SCENES: tuple[Scene, ...] = (
    _scene(
        0,
        "kitchen",
        "train",
        [
            cabinet("counter", -0.75, 1.9, 1.7, 0.65, 0.9, WHITE, top=(0.25, 0.25, 0.28)),
            shelf("wall shelf", 0.65, 2.45, 1.0, 0.45, 1.3, DARK_WOOD),
            table("kitchen table", 0.3, 0.95, 1.3, 0.85, 0.75, WOOD),
            cabinet("stool", -0.7, 0.75, 0.5, 0.5, 0.6, (0.30, 0.45, 0.60)),
            block(1.9, 0.0, 2.1, 0.8, 1.8, 0.7, (0.85, 0.87, 0.90)),  # fridge
        ],
        (0.0, 1.8, -1.6),
        (0.0, 0.6, 1.3),
        room_half=(2.6, 1.4, 2.7),
        wall=(0.80, 0.86, 0.80),
        floor=((0.80, 0.80, 0.78), (0.45, 0.45, 0.48)),
    ),
    _scene(
        1,
        "bedroom",
        "train",
        [
            cabinet("bed", -0.8, 1.3, 1.4, 1.9, 0.55, (0.35, 0.45, 0.75), top=(0.92, 0.92, 0.96)),
            block(-0.8, 0.0, 2.3, 1.5, 1.0, 0.1, DARK_WOOD),  # headboard
            cabinet("nightstand", 0.2, 2.0, 0.5, 0.45, 0.62, WOOD),
            cabinet("dresser", 1.0, 1.9, 0.9, 0.5, 1.0, (0.70, 0.55, 0.40)),
            table("desk", 0.75, 1.15, 1.1, 0.7, 0.75, WHITE),
            shelf("wall shelf", -0.8, 2.52, 1.0, 0.36, 1.3, DARK_WOOD),
        ],
        (0.2, 1.75, -1.5),
        (0.0, 0.6, 1.4),
        room_half=(2.6, 1.4, 2.7),
        wall=(0.88, 0.80, 0.82),
        floor=((0.60, 0.45, 0.32), (0.55, 0.40, 0.28)),
    ),
    _scene(
        2,
        "living room",
        "train",
        [
            table("coffee table", 0.0, 0.95, 1.2, 0.65, 0.42, DARK_WOOD),
            cabinet("sofa", 0.0, 1.75, 1.8, 0.6, 0.45, (0.40, 0.55, 0.45), top=(0.45, 0.62, 0.50)),
            block(0.0, 0.0, 2.2, 2.0, 0.9, 0.3, (0.36, 0.50, 0.40)),  # sofa back
            cabinet("side table", 1.25, 1.75, 0.5, 0.5, 0.6, WOOD),
            cabinet("tv stand", -1.35, 0.8, 0.5, 1.3, 0.7, (0.25, 0.25, 0.27)),
            cabinet("bookcase", 1.45, 0.6, 0.5, 0.8, 1.15, (0.55, 0.35, 0.20)),
        ],
        (0.0, 1.7, -1.5),
        (0.0, 0.5, 1.2),
        room_half=(2.6, 1.4, 2.6),
        wall=(0.90, 0.86, 0.72),
        floor=((0.62, 0.50, 0.36), (0.58, 0.46, 0.33)),
    ),
    _scene(
        3,
        "dining room",
        "train",
        [
            table("dining table", 0.0, 0.9, 1.6, 0.9, 0.76, (0.50, 0.32, 0.18)),
            cabinet("sideboard", 0.1, 1.85, 1.6, 0.5, 0.95, (0.80, 0.78, 0.70)),
            cabinet("serving cart", -1.2, 0.9, 0.5, 0.6, 0.62, GREY),
            shelf("wall shelf", 1.5, 2.52, 0.8, 0.36, 1.35, DARK_WOOD),
            chair(1.15, 0.9, DARK_WOOD),
        ],
        (0.4, 1.75, -1.5),
        (0.0, 0.7, 1.3),
        room_half=(2.6, 1.4, 2.7),
        wall=(0.78, 0.82, 0.90),
        floor=((0.70, 0.62, 0.50), (0.40, 0.30, 0.22)),
    ),
    _scene(
        4,
        "office",
        "train",
        [
            table("desk", -0.2, 1.2, 1.4, 0.7, 0.74, (0.85, 0.85, 0.82), legs=(0.2, 0.2, 0.2)),
            cabinet("filing cabinet", 0.85, 1.3, 0.5, 0.6, 1.0, GREY),
            cabinet("bookshelf", -1.45, 1.9, 0.8, 0.4, 1.2, (0.45, 0.30, 0.18)),
            cabinet("printer stand", 0.85, 0.45, 0.6, 0.5, 0.5, (0.30, 0.30, 0.32)),
            chair(-1.3, 0.6, (0.15, 0.15, 0.18)),
        ],
        (0.1, 1.75, -1.5),
        (-0.1, 0.6, 1.3),
        room_half=(2.6, 1.4, 2.6),
        wall=(0.85, 0.85, 0.88),
        floor=((0.35, 0.38, 0.45), (0.32, 0.35, 0.42)),
    ),
)

TEST_SCENES: tuple[Scene, ...] = (
    _scene(
        5,
        "studio apartment",
        "test",
        [
            cabinet("breakfast bar", 0.9, 0.9, 0.55, 1.6, 1.05, (0.60, 0.20, 0.20), top=(0.9, 0.9, 0.9)),
            table("low table", -0.5, 0.9, 0.9, 0.9, 0.38, (0.75, 0.60, 0.40)),
            cabinet("stool", 0.25, 0.6, 0.4, 0.4, 0.7, (0.20, 0.20, 0.20)),
            cabinet("bench", -0.3, 2.2, 1.4, 0.4, 0.48, (0.30, 0.30, 0.35)),
            shelf("wall shelf", -1.6, 2.62, 0.9, 0.36, 1.25, (0.9, 0.9, 0.9)),
        ],
        (-1.3, 1.7, -1.4),
        (0.1, 0.6, 1.2),
        room_half=(2.6, 1.4, 2.8),
        wall=(0.70, 0.80, 0.85),
        floor=((0.85, 0.82, 0.75), (0.70, 0.66, 0.60)),
    ),
    _scene(
        6,
        "workshop",
        "test",
        [
            table("workbench", 0.1, 1.6, 2.0, 0.75, 0.95, (0.70, 0.55, 0.30), legs=(0.2, 0.25, 0.3)),
            cabinet("tool cart", -1.35, 1.2, 0.5, 0.5, 0.8, (0.80, 0.15, 0.10)),
            cabinet("crate", 0.9, 0.5, 0.6, 0.6, 0.5, (0.60, 0.45, 0.25)),
            cabinet("small crate", 0.2, 0.55, 0.5, 0.5, 0.35, (0.50, 0.38, 0.20)),
            shelf("high shelf", -1.3, 2.72, 0.9, 0.36, 1.5, GREY),
        ],
        (1.2, 1.8, -1.3),
        (0.0, 0.6, 1.2),
        room_half=(2.8, 1.5, 2.9),
        wall=(0.65, 0.65, 0.62),
        floor=((0.50, 0.50, 0.50), (0.46, 0.46, 0.46)),
    ),
    _scene(
        7,
        "break room",
        "test",
        [
            cabinet("kitchenette", -1.6, 1.2, 0.6, 1.8, 0.92, (0.25, 0.40, 0.55), top=(0.15, 0.15, 0.15)),
            table("square table", -0.6, 0.9, 0.9, 0.9, 0.72, (0.90, 0.90, 0.90), legs=(0.2, 0.2, 0.2)),
            table("side counter", 0.7, 2.1, 1.0, 0.5, 1.1, (0.55, 0.40, 0.30)),
            cabinet("vending machine", 1.5, 0.8, 0.7, 0.6, 1.4, (0.80, 0.25, 0.15)),
            cabinet("coffee cart", 0.6, 0.7, 0.5, 0.5, 0.85, (0.35, 0.25, 0.20)),
            chair(0.3, 1.35, (0.2, 0.5, 0.7)),
        ],
        (-0.3, 1.75, -1.6),
        (0.0, 0.7, 1.2),
        room_half=(2.5, 1.4, 2.8),
        wall=(0.92, 0.90, 0.80),
        floor=((0.30, 0.30, 0.30), (0.75, 0.75, 0.75)),
    ),
)

SCENES: tuple[Scene, ...] = TRAIN_SCENES + TEST_SCENES


def scenes_for_split(split: str) -> tuple[Scene, ...]:
    """ "train" and "val" use the five training scenes, "test" the three unseen ones."""
    if split in ("train", "val"):
        return TRAIN_SCENES
    if split == "test":
        return TEST_SCENES
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")

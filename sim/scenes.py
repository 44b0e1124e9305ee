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
    move_scale: tuple[float, float, float] = (0.4, 0.4, 0.25)  # metres per unit action along x, y, z


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


def _angular_extent(position, rotation, points):
    """(min, max) of x/z and y/z over `points` in the camera frame, or None if one lies behind the camera."""
    forward, right, up = camera_basis(rotation)
    xs, ys = [], []
    for q in points:
        d = [q[i] - position[i] for i in range(3)]
        z = sum(a * b for a, b in zip(d, forward))
        if z <= 0.1:
            return None
        xs.append(sum(a * b for a, b in zip(d, right)) / z)
        ys.append(sum(a * b for a, b in zip(d, up)) / z)
    return min(xs), max(xs), min(ys), max(ys)


def frame_camera(position, target, surfaces, room_half, headroom=0.35):
    """Camera (position, rotation) that shows every designated surface and the space `headroom` above it.

    The camera moves along the line from `target` through `position`, from a third of the way out backwards,
    until the points fit inside the image with FRAME_MARGIN to spare (or a wall is near); at each distance it
    turns to centre them.
    """
    tan = math.tan(math.radians(FOV_Y_DEG) / 2) * (1 - 2 * FRAME_MARGIN)
    points = [
        (s.center[0] + sx * s.half[0], s.center[1] + dy, s.center[2] + sz * s.half[1])
        for s in surfaces
        for sx in (-1, 1)
        for sz in (-1, 1)
        for dy in (0.0, headroom)
    ]
    factor = 0.34
    while True:
        pos = tuple(round(t + factor * (p - t), 3) for p, t in zip(position, target))
        pitch, yaw, _ = look_at(pos, target)
        extent = None
        for _ in range(5):  # re-aim at the middle of the points' angular extent
            extent = _angular_extent(pos, (pitch, yaw, 0.0), points)
            if extent is None:
                break
            yaw += math.degrees(math.atan((extent[0] + extent[1]) / 2))
            pitch -= math.degrees(math.atan((extent[2] + extent[3]) / 2))
        rotation = (round(pitch, 3), round(yaw, 3), 0.0)
        extent = _angular_extent(pos, rotation, points)
        fits = extent is not None and max(abs(v) for v in extent) <= tan
        inside = all(abs(pos[i]) < room_half[i] - 0.15 for i in (0, 2)) and pos[1] < 2 * room_half[1] - 0.1
        if fits or not inside:
            return pos, rotation
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
    move_scale=(0.4, 0.4, 0.25),
):
    boxes, surfaces = [], []
    for piece_boxes, surface in pieces:
        boxes += piece_boxes
        if surface is not None:
            surfaces.append(surface)
    camera_position, camera_rotation = frame_camera(camera_position, target, surfaces, room_half)
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
        camera_rotation=camera_rotation,
        move_scale=move_scale,
    )


WOOD = (0.62, 0.42, 0.24)
DARK_WOOD = (0.38, 0.24, 0.14)
WHITE = (0.90, 0.90, 0.88)
GREY = (0.55, 0.56, 0.58)


def _at(builder, name, x0, x1, z0, z1, h, colour, **kw):
    """A surface piece given by its footprint bounds x0..x1, z0..z1 and height h."""
    return builder(name, (x0 + x1) / 2, (z0 + z1) / 2, x1 - x0, z1 - z0, h, colour, **kw)


# Neighbouring surfaces leave 3 cm gaps and differ in height by less than a full upward action, so an object can
# be lifted from one onto the next; a few (wall shelves) are reachable only from afar.
TRAIN_SCENES: tuple[Scene, ...] = (
    _scene(
        0,
        "kitchen",
        "train",
        [
            _at(cabinet, "counter", -1.6, 0.0, 1.58, 2.23, 0.9, WHITE, top=(0.55, 0.50, 0.45)),
            _at(cabinet, "microwave cabinet", 0.03, 0.63, 1.73, 2.23, 1.15, (0.75, 0.75, 0.72)),
            _at(shelf, "wall shelf", 0.66, 1.46, 2.24, 2.6, 1.45, DARK_WOOD),
            _at(table, "kitchen table", -0.5, 0.8, 0.6, 1.5, 0.75, WOOD),
            _at(cabinet, "stool", -1.03, -0.53, 0.7, 1.2, 0.6, (0.30, 0.45, 0.60)),
            block(2.0, 0.0, 2.1, 0.8, 1.8, 0.7, (0.85, 0.87, 0.90)),  # fridge
        ],
        (0.0, 1.8, -1.6),
        (0.0, 0.6, 1.3),
        room_half=(2.6, 1.4, 2.6),
        wall=(0.80, 0.86, 0.80),
        floor=((0.80, 0.80, 0.78), (0.45, 0.45, 0.48)),
    ),
    _scene(
        1,
        "bedroom",
        "train",
        [
            _at(cabinet, "bed", -1.5, -0.1, 0.4, 2.3, 0.55, (0.45, 0.50, 0.65), top=(0.92, 0.92, 0.96)),
            block(-0.8, 0.0, 2.35, 1.5, 1.0, 0.1, DARK_WOOD),  # headboard
            _at(cabinet, "nightstand", -0.07, 0.43, 1.8, 2.25, 0.62, WOOD),
            _at(cabinet, "dresser", 0.46, 1.36, 1.75, 2.3, 0.95, (0.70, 0.55, 0.40)),
            _at(table, "desk", -0.07, 1.13, 0.95, 1.72, 0.75, WHITE),
            _at(shelf, "wall shelf", -1.3, -0.3, 2.42, 2.78, 1.3, DARK_WOOD),
        ],
        (0.2, 1.75, -1.5),
        (0.0, 0.6, 1.4),
        room_half=(2.6, 1.4, 2.8),
        wall=(0.88, 0.80, 0.82),
        floor=((0.60, 0.45, 0.32), (0.55, 0.40, 0.28)),
    ),
    _scene(
        2,
        "living room",
        "train",
        [
            _at(table, "coffee table", -0.6, 0.6, 0.7, 1.35, 0.42, DARK_WOOD),
            _at(cabinet, "sofa", -0.9, 0.9, 1.38, 2.0, 0.45, (0.40, 0.55, 0.45), top=(0.45, 0.62, 0.50)),
            block(0.0, 0.0, 2.15, 1.9, 0.9, 0.3, (0.36, 0.50, 0.40)),  # sofa back
            _at(cabinet, "side table", 0.93, 1.43, 1.45, 1.95, 0.6, WOOD),
            _at(cabinet, "bookcase", 0.93, 1.43, 0.6, 1.42, 0.95, (0.55, 0.35, 0.20)),
            _at(cabinet, "tv stand", -1.43, -0.63, 0.7, 1.35, 0.6, (0.50, 0.42, 0.35)),
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
            _at(table, "dining table", -0.8, 0.8, 0.45, 1.35, 0.76, (0.50, 0.32, 0.18)),
            _at(cabinet, "sideboard", -0.7, 0.9, 1.38, 1.88, 0.95, (0.80, 0.78, 0.70)),
            _at(cabinet, "serving cart", -1.33, -0.83, 0.6, 1.2, 0.62, GREY),
            _at(cabinet, "hutch", 0.93, 1.43, 1.3, 1.9, 1.25, DARK_WOOD),
            chair(1.2, 0.55, DARK_WOOD),
        ],
        (0.4, 1.75, -1.5),
        (0.0, 0.7, 1.3),
        room_half=(2.6, 1.4, 2.6),
        wall=(0.78, 0.82, 0.90),
        floor=((0.70, 0.62, 0.50), (0.40, 0.30, 0.22)),
    ),
    _scene(
        4,
        "office",
        "train",
        [
            _at(table, "desk", -0.9, 0.5, 0.85, 1.55, 0.74, (0.85, 0.85, 0.82), legs=(0.2, 0.2, 0.2)),
            _at(cabinet, "filing cabinet", 0.53, 1.03, 1.0, 1.6, 1.0, GREY),
            _at(cabinet, "printer stand", 0.53, 1.13, 0.4, 0.97, 0.5, (0.55, 0.55, 0.50)),
            _at(cabinet, "bookshelf", -1.75, -0.93, 1.2, 1.6, 1.1, (0.45, 0.30, 0.18)),
            chair(-1.4, 0.4, (0.15, 0.15, 0.18)),
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
            _at(
                cabinet, "breakfast bar", 0.63, 1.18, 0.1, 1.7, 1.05, (0.45, 0.35, 0.30), top=(0.9, 0.9, 0.9)
            ),
            _at(cabinet, "stool", 0.1, 0.6, 0.5, 1.0, 0.7, (0.60, 0.50, 0.35)),
            _at(table, "low table", -0.83, 0.07, 0.4, 1.3, 0.38, (0.75, 0.60, 0.40)),
            _at(cabinet, "bench", -1.0, 0.4, 1.33, 1.73, 0.48, (0.50, 0.55, 0.60)),
            _at(shelf, "wall shelf", -2.0, -1.1, 2.44, 2.8, 1.25, (0.9, 0.9, 0.9)),
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
            _at(table, "workbench", -0.9, 1.1, 1.25, 2.0, 0.95, (0.70, 0.55, 0.30), legs=(0.2, 0.25, 0.3)),
            _at(cabinet, "tool cart", -1.43, -0.93, 1.3, 1.8, 0.8, (0.30, 0.45, 0.45)),
            _at(cabinet, "crate", 0.5, 1.1, 0.62, 1.22, 0.6, (0.60, 0.45, 0.25)),
            _at(cabinet, "small crate", -0.03, 0.47, 0.7, 1.2, 0.35, (0.50, 0.38, 0.20)),
            _at(shelf, "high shelf", -1.75, -0.85, 2.54, 2.9, 1.5, GREY),
        ],
        (1.3, 1.8, -1.3),
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
            _at(
                cabinet, "kitchenette", -1.9, -1.3, 0.3, 2.1, 0.92, (0.40, 0.48, 0.55), top=(0.62, 0.60, 0.55)
            ),
            _at(
                table, "square table", -1.27, -0.37, 0.6, 1.5, 0.72, (0.90, 0.90, 0.90), legs=(0.2, 0.2, 0.2)
            ),
            _at(cabinet, "coffee cart", -0.34, 0.16, 0.8, 1.3, 0.85, (0.35, 0.25, 0.20)),
            _at(table, "side counter", -0.2, 0.8, 1.33, 1.83, 1.1, (0.55, 0.40, 0.30)),
            _at(cabinet, "vending machine", 0.83, 1.53, 1.2, 1.8, 1.4, (0.55, 0.55, 0.62)),
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

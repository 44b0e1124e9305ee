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
        boxes.append(Box((x + sx * (w / 2 - 0.06), h - 0.12, z + d / 2 - 0.1), (0.015, 0.08, 0.1), _darker(colour)))
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


def _scene(index, name, split, pieces, camera_position, target, room_half=(2.8, 1.4, 2.8),
           wall=(0.82, 0.80, 0.74), floor=((0.55, 0.42, 0.30), (0.50, 0.38, 0.27)), move_scale=(0.35, 0.5, 0.35)):
    boxes, surfaces = [], []
    for piece_boxes, surface in pieces:
        boxes += piece_boxes
        if surface is not None:
            surfaces.append(surface)
    return Scene(
        index=index, name=name, split=split, room_half=room_half, wall_colour=wall, floor_colours=floor,
        boxes=tuple(boxes), surfaces=tuple(surfaces), camera_position=camera_position,
        camera_rotation=look_at(camera_position, target), move_scale=move_scale,
    )


WOOD = (0.62, 0.42, 0.24)
DARK_WOOD = (0.38, 0.24, 0.14)
WHITE = (0.90, 0.90, 0.88)
GREY = (0.55, 0.56, 0.58)

TRAIN_SCENES: tuple[Scene, ...] = (
    _scene(0, "kitchen", "train", [
        cabinet("counter", -0.9, 1.9, 1.6, 0.6, 0.9, WHITE, top=(0.25, 0.25, 0.28)),
        shelf("wall shelf", 1.1, 2.6, 1.0, 0.36, 1.35, DARK_WOOD),
        table("kitchen table", 0.25, 0.45, 1.2, 0.8, 0.75, WOOD),
        cabinet("stool", -1.35, 0.15, 0.45, 0.45, 0.6, (0.30, 0.45, 0.60)),
        block(2.25, 0.0, 2.3, 0.8, 1.8, 0.7, (0.85, 0.87, 0.90)),  # fridge
    ], (0.0, 1.75, -2.1), (0.0, 0.6, 1.0), wall=(0.80, 0.86, 0.80), floor=((0.80, 0.80, 0.78), (0.45, 0.45, 0.48))),
    _scene(1, "bedroom", "train", [
        cabinet("bed", -0.7, 1.5, 1.5, 1.9, 0.55, (0.35, 0.45, 0.75), top=(0.92, 0.92, 0.96)),
        block(-0.7, 0.55, 2.5, 1.5, 0.45, 0.1, DARK_WOOD),  # headboard
        cabinet("nightstand", 0.45, 2.2, 0.5, 0.45, 0.6, WOOD),
        cabinet("dresser", 1.55, 1.2, 0.6, 1.2, 1.0, (0.70, 0.55, 0.40)),
        table("desk", 0.9, -0.3, 1.0, 0.6, 0.75, WHITE),
        shelf("wall shelf", -2.6, -0.1, 0.36, 1.0, 1.3, DARK_WOOD),
    ], (0.3, 1.7, -2.2), (0.0, 0.55, 1.0), wall=(0.88, 0.80, 0.82), floor=((0.60, 0.45, 0.32), (0.55, 0.40, 0.28))),
    _scene(2, "living room", "train", [
        table("coffee table", 0.0, 0.55, 1.2, 0.6, 0.42, DARK_WOOD),
        block(0.0, 0.0, 1.9, 2.0, 0.45, 0.8, (0.40, 0.55, 0.45)),  # sofa seat
        block(0.0, 0.45, 2.2, 2.0, 0.45, 0.2, (0.36, 0.50, 0.40)),  # sofa back
        cabinet("side table", 1.45, 1.8, 0.5, 0.5, 0.55, WOOD),
        cabinet("tv stand", -1.65, 0.6, 0.5, 1.4, 0.7, (0.25, 0.25, 0.27)),
        cabinet("bookcase", 1.75, 0.2, 0.5, 0.8, 1.25, (0.55, 0.35, 0.20)),
    ], (0.0, 1.7, -2.0), (0.0, 0.5, 0.9), wall=(0.90, 0.86, 0.72), floor=((0.62, 0.50, 0.36), (0.58, 0.46, 0.33))),
    _scene(3, "dining room", "train", [
        table("dining table", 0.0, 0.9, 1.6, 0.9, 0.76, (0.50, 0.32, 0.18)),
        chair(-0.45, 0.2, DARK_WOOD), chair(0.45, 0.2, DARK_WOOD),
        cabinet("sideboard", 0.0, 2.4, 1.6, 0.45, 0.95, (0.80, 0.78, 0.70)),
        cabinet("serving cart", -1.75, 0.5, 0.6, 0.45, 0.6, GREY),
        shelf("wall shelf", 1.8, 2.6, 0.8, 0.34, 1.45, DARK_WOOD),
    ], (0.5, 1.75, -1.8), (0.0, 0.7, 1.1), wall=(0.78, 0.82, 0.90), floor=((0.70, 0.62, 0.50), (0.40, 0.30, 0.22))),
    _scene(4, "office", "train", [
        table("desk", -0.3, 1.0, 1.4, 0.7, 0.74, (0.85, 0.85, 0.82), legs=(0.2, 0.2, 0.2)),
        chair(-0.3, 0.4, (0.15, 0.15, 0.18), facing=-1),
        cabinet("filing cabinet", 1.2, 1.1, 0.5, 0.6, 1.05, GREY),
        cabinet("bookshelf", -1.7, 1.9, 0.8, 0.35, 1.3, (0.45, 0.30, 0.18)),
        cabinet("printer stand", 0.95, -0.15, 0.6, 0.5, 0.5, (0.30, 0.30, 0.32)),
    ], (0.2, 1.7, -1.9), (-0.1, 0.6, 1.0), wall=(0.85, 0.85, 0.88), floor=((0.35, 0.38, 0.45), (0.32, 0.35, 0.42))),
)

TEST_SCENES: tuple[Scene, ...] = (
    _scene(5, "studio apartment", "test", [
        cabinet("breakfast bar", 1.0, 0.5, 0.5, 1.6, 1.05, (0.60, 0.20, 0.20), top=(0.9, 0.9, 0.9)),
        table("low table", -0.8, 0.9, 0.9, 0.9, 0.38, (0.75, 0.60, 0.40)),
        cabinet("bench", -0.3, 2.35, 1.4, 0.4, 0.48, (0.30, 0.30, 0.35)),
        shelf("wall shelf", -2.1, 2.6, 0.9, 0.34, 1.2, (0.9, 0.9, 0.9)),
    ], (-1.4, 1.65, -1.7), (0.0, 0.6, 1.2), room_half=(2.6, 1.4, 2.8), wall=(0.70, 0.80, 0.85),
       floor=((0.85, 0.82, 0.75), (0.70, 0.66, 0.60))),
    _scene(6, "workshop", "test", [
        table("workbench", 0.2, 1.7, 2.0, 0.7, 0.95, (0.70, 0.55, 0.30), legs=(0.2, 0.25, 0.3)),
        cabinet("tool cart", -1.5, 0.4, 0.5, 0.5, 0.8, (0.80, 0.15, 0.10)),
        cabinet("crate", 1.4, 0.2, 0.6, 0.6, 0.5, (0.60, 0.45, 0.25)),
        shelf("high shelf", -1.6, 2.6, 0.9, 0.34, 1.55, GREY),
    ], (1.3, 1.8, -1.8), (0.0, 0.6, 1.0), room_half=(2.8, 1.5, 2.9), wall=(0.65, 0.65, 0.62),
       floor=((0.50, 0.50, 0.50), (0.46, 0.46, 0.46))),
    _scene(7, "break room", "test", [
        cabinet("kitchenette", -1.9, 1.0, 0.6, 1.8, 0.92, (0.25, 0.40, 0.55), top=(0.15, 0.15, 0.15)),
        table("round table", 0.0, 0.8, 0.9, 0.9, 0.72, (0.90, 0.90, 0.90), legs=(0.2, 0.2, 0.2)),
        table("side counter", 1.5, 2.1, 1.0, 0.5, 1.1, (0.55, 0.40, 0.30)),
        cabinet("vending machine top", 1.9, 0.4, 0.7, 0.6, 1.4, (0.80, 0.25, 0.15)),
        chair(0.0, 0.15, (0.2, 0.5, 0.7)),
    ], (-0.4, 1.75, -1.9), (0.0, 0.65, 1.0), room_half=(2.5, 1.4, 2.8), wall=(0.92, 0.90, 0.80),
       floor=((0.30, 0.30, 0.30), (0.75, 0.75, 0.75))),
)

SCENES: tuple[Scene, ...] = TRAIN_SCENES + TEST_SCENES


def scenes_for_split(split: str) -> tuple[Scene, ...]:
    """"train" and "val" use the five training scenes, "test" the three unseen ones."""
    if split in ("train", "val"):
        return TRAIN_SCENES
    if split == "test":
        return TEST_SCENES
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")

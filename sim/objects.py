"""The object catalogue: nine named objects, each a few coloured primitives (paper section 4.1).

Every object is an axis-aligned union of primitives placed relative to the object's centre, which is the centre
of its axis-aligned bounding box; the box's half-size (`half`) is what the feasibility rules use. Primitives:
"box" (half-size hx, hy, hz), "cylinder" (vertical axis; half = radius, half height, radius) and "ellipsoid"
(semi-axes). Sizes are in metres, about 1.5x real size so that objects stay legible in small images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Primitive:
    kind: str  # "box" | "cylinder" | "ellipsoid"
    offset: tuple[float, float, float]  # centre relative to the object's centre
    half: tuple[float, float, float]
    colour: tuple[float, float, float]  # linear RGB in [0, 1]


@dataclass(frozen=True)
class ObjectSpec:
    name: str  # as a caption names it
    primitives: tuple[Primitive, ...]

    @property
    def half(self) -> tuple[float, float, float]:
        """Half-size of the bounding box, centred on the object's centre."""
        return tuple(
            round(max(abs(p.offset[a]) + p.half[a] for p in self.primitives), 6) for a in range(3)
        )


def _obj(name: str, *primitives: tuple) -> ObjectSpec:
    return ObjectSpec(name, tuple(Primitive(*p) for p in primitives))


# Offsets are chosen so that every object's lowest primitive touches y = -half_y (it rests on the surface).
OBJECTS: tuple[ObjectSpec, ...] = (
    _obj(
        "blender",
        ("box", (0.0, -0.17, 0.0), (0.11, 0.07, 0.11), (0.12, 0.12, 0.14)),  # motor base
        ("cylinder", (0.0, 0.07, 0.0), (0.085, 0.17, 0.085), (0.55, 0.35, 0.85)),  # purple jar
    ),
    _obj("plate", ("cylinder", (0.0, 0.0, 0.0), (0.17, 0.02, 0.17), (0.95, 0.95, 0.92))),
    _obj(
        "small pot",
        ("cylinder", (0.0, 0.0, 0.0), (0.12, 0.08, 0.12), (0.30, 0.30, 0.33)),
        ("box", (0.0, 0.04, 0.0), (0.18, 0.015, 0.025), (0.10, 0.10, 0.10)),  # two handles
    ),
    _obj("yellow bowl", ("ellipsoid", (0.0, 0.0, 0.0), (0.14, 0.07, 0.14), (0.98, 0.85, 0.10))),
    _obj(
        "cup",
        ("cylinder", (0.0, 0.0, 0.0), (0.065, 0.08, 0.065), (0.15, 0.40, 0.95)),
        ("box", (0.085, 0.0, 0.0), (0.025, 0.045, 0.012), (0.15, 0.40, 0.95)),  # handle
    ),
    _obj(
        "green bottle",
        ("cylinder", (0.0, -0.05, 0.0), (0.06, 0.16, 0.06), (0.10, 0.65, 0.20)),
        ("cylinder", (0.0, 0.16, 0.0), (0.025, 0.05, 0.025), (0.05, 0.45, 0.12)),  # neck
    ),
    _obj("red book", ("box", (0.0, 0.0, 0.0), (0.12, 0.035, 0.16), (0.85, 0.08, 0.08))),
    _obj(
        "lamp",
        ("cylinder", (0.0, -0.27, 0.0), (0.10, 0.02, 0.10), (0.45, 0.30, 0.12)),  # base
        ("cylinder", (0.0, -0.10, 0.0), (0.018, 0.16, 0.018), (0.45, 0.30, 0.12)),  # stem
        ("cylinder", (0.0, 0.17, 0.0), (0.14, 0.12, 0.14), (1.00, 0.55, 0.15)),  # orange shade
    ),
    _obj(
        "toaster",
        ("box", (0.0, -0.005, 0.0), (0.17, 0.105, 0.10), (0.75, 0.78, 0.80)),
        ("box", (0.0, 0.10, -0.035), (0.12, 0.01, 0.015), (0.05, 0.05, 0.05)),  # bread slots
        ("box", (0.0, 0.10, 0.035), (0.12, 0.01, 0.015), (0.05, 0.05, 0.05)),
    ),
)
OBJECT_NAMES: tuple[str, ...] = tuple(o.name for o in OBJECTS)
# [9, 3] float64: half-size of each catalogue object's bounding box (x, y, z).
OBJECT_HALF = np.array([o.half for o in OBJECTS], dtype=np.float64)


def object_index(name: str) -> int:
    try:
        return OBJECT_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown object {name!r}; the catalogue holds {OBJECT_NAMES}") from None

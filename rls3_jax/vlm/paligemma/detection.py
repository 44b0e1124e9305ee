"""Object detection in PaliGemma's own format, for the embedded model's base pretraining.

Real PaliGemma answers "detect cup" with four location tokens and the name, "<loc0412><loc0233><loc0530><loc0310>
cup": y_min, x_min, y_max, x_max of the box in the image frame, each binned into 1024 steps. The embedded base
learns the same task on simulator renders, so that, like the checkpoints RLS3 fine-tunes, it knows where the
objects are before it is ever asked where one is relative to another (a detection answer holds no spatial word).

Boxes come from the metadata alone: the corners of an object's bounding box projected through the sample's
camera (the simulator's pinhole: square image, FOV_Y_DEG).
"""

from __future__ import annotations

import math
import re

import numpy as np

LOC_BINS = 1024
LOC_TOKENS = tuple(f"<loc{i:04d}>" for i in range(LOC_BINS))
_LOC = re.compile(r"<loc(\d{4})>")


def detect_prompt(name: str) -> str:
    return f"detect {name}"


def _camera(metadata: dict):
    from sim.scenes import camera_basis

    camera = metadata["camera"]
    return np.asarray(camera["position"], np.float64), [np.asarray(v) for v in camera_basis(camera["rotation"])]


def project(metadata: dict, points) -> np.ndarray:
    """[N, 3] world points -> [N, 3] (row, column in [0, 1] of the image, distance along the camera's forward)."""
    from sim.scenes import FOV_Y_DEG

    origin, (forward, right, up) = _camera(metadata)
    d = np.asarray(points, np.float64) - origin
    z = d @ forward
    focal = 0.5 / math.tan(math.radians(FOV_Y_DEG) / 2)
    return np.stack([0.5 - focal * (d @ up) / z, 0.5 + focal * (d @ right) / z, z], axis=-1)


def object_box(metadata: dict, index: int) -> np.ndarray:
    """(y_min, x_min, y_max, x_max) in [0, 1] of the index-th object's projected bounding box; for mirrored
    metadata (rls3_jax.mirror) the box of the original object, flipped left to right as the image is."""
    from sim.objects import OBJECT_HALF, object_index

    if metadata.get("mirrored"):
        from rls3_jax.mirror import mirrored_metadata

        y0, x0, y1, x1 = object_box(mirrored_metadata(metadata), index)
        return np.array([y0, 1.0 - x1, y1, 1.0 - x0])

    obj = metadata["objects"][index]
    half = OBJECT_HALF[object_index(obj["name"])]
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)
    rc = project(metadata, np.asarray(obj["position"]) + signs * half)[:, :2]
    return np.clip(np.concatenate([rc.min(0), rc.max(0)]), 0.0, 1.0)


def loc_bin(value: float) -> int:
    return int(min(LOC_BINS - 1, max(0, math.floor(value * LOC_BINS))))


def detect_answer(metadata: dict, index: int) -> str:
    """'<locY0><locX0><locY1><locX1> name' for the index-th object."""
    box = object_box(metadata, index)
    return "".join(LOC_TOKENS[loc_bin(v)] for v in box) + " " + metadata["objects"][index]["name"]


def parse_box(answer: str) -> np.ndarray | None:
    """The first four location tokens of an answer as a box in [0, 1] (bin centres), or None."""
    bins = [int(m) for m in _LOC.findall(answer)[:4]]
    if len(bins) < 4:
        return None
    return (np.asarray(bins, np.float64) + 0.5) / LOC_BINS


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (y0, x0, y1, x1) boxes."""
    h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - h * w
    return float(h * w / union) if union > 0 else 0.0


def grounded_answer(sample: dict) -> str:
    """The spatial answer preceded by both objects' boxes, in the order the question names them:
    '<loc..>x4 small pot ; <loc..>x4 cup ; The small pot is to the left of the cup.'

    The boxes are what "detect small pot ; cup" answers (the base's own skill); the caption that follows can
    then read the two objects' places from the answer's location tokens. Needs the sample's `metadata`."""
    metadata = sample.get("metadata")
    if metadata is None:
        raise ValueError(f"a grounded answer needs the sample's metadata (sample {sample.get('caption')!r} has none)")
    index = {o["name"]: i for i, o in enumerate(metadata["objects"])}
    boxes = [detect_answer(metadata, index[sample[role]]) for role in ("located", "reference")]
    return " ; ".join(boxes) + " ; " + sample["caption"]

"""Feasibility rules of the simulator as pure array functions (numpy or jax.numpy via `xp`).

Scene description ("geometry state"), a dict of fixed-shape arrays (a pytree in JAX):

    surface_center  float [S_MAX, 3]  (x, height of the top face, z) of each designated surface
    surface_half    float [S_MAX, 2]  half extent of each surface along x and z
    surface_mask    bool  [S_MAX]     True for real surfaces; padding rows are False (and zero)
    move_scale      float [3]         metres per unit action along x, y, z
    object_pos      float [3, 3]      centre (x, y, z) of each active object's bounding box
    object_half     float [3, 3]      half-size (x, y, z) of each active object's bounding box
    object_surface  int   [3]         index of the surface each active object rests on
    scene_index     int   []          global scene index (0-7)
    camera_position float [3], camera_rotation float [3] (Unity Euler degrees)

`observation(geo, selected, xp)` builds the environment's 32-float observation from these arrays.

The move of active object k by action a in [-1, 1]^3 (clipped):
  target centre x/z = x/z + a_x/z * scale_x/z; target bottom height b = bottom + a_y * scale_y.
  The object drops onto the highest designated surface whose rectangle contains the target centre and whose top
  lies between b - MAX_DROP and b + DROP_TOL (it may be lifted a little too high and falls, or pressed a little
  too low and settles on top, but is never thrown from high or pushed through a surface).
  The move is valid iff such a surface exists, the object's footprint lies fully inside it, and the object's
  box at rest (bottom on that surface) overlaps no other active object's box (touching is allowed).
  An invalid move leaves the state unchanged.
The "surface" rule (`MOVES`; the stand-in's alone, the Unity environment moves by displacement) reads a_x as
  the choice of one of the scene's designated surfaces (equal bins of [-1, 1], lowest to highest) and a_y, a_z
  as the place on it
  (-1 and 1 put the object's edge on the surface's edges); the object rests on that surface, and the move is
  valid iff the object fits on it and overlaps no other active object.
The "surface-point" rule picks the surface as "surface" does, and reads a_y, a_z as a point of the room in the
  observation's units (x = a_y * POS_SCALE, z = a_z * POS_SCALE); the object rests where its centre comes
  nearest that point with its footprint on the surface. An agent that sees another object at (x, z) puts the
  selected one above or below it by naming that surface and that point.

`move(geo, k, action, xp)` is the array form (jit-able with xp=jax.numpy; k may be traced);
`move_scalar(...)` is the same rule in plain Python floats for the environment's hot path. Tests check that
both agree with each other and with a jax.numpy call.
"""

from __future__ import annotations

import numpy as np

S_MAX = 8  # surfaces per scene, padded
N_ACTIVE = 3  # active objects
DROP_TOL = 0.05  # a surface up to this far above the target bottom still catches the object
MAX_DROP = 0.5  # a surface more than this far below the target bottom does not (the object would be thrown)
EPS = 1e-6  # containment slack / contact allowance
# Observation normalisation: x / POS_SCALE, y / Y_MID - 1, z / POS_SCALE (metres); angles / 180 (degrees).
POS_SCALE = 3.0
Y_MID = 1.5
N_SCENES_TOTAL = 8
# How an action moves the selected object: "displacement" is the paper's (and the Unity environment's) relative
# move; "surface" names a designated surface and a place on it, "surface-point" a surface and a point of the
# room (both the stand-in's; see the module text).
MOVES = ("displacement", "surface", "surface-point")
# The order of the objects in the observation: by slot (the paper's, Unity's), or the selected one first and the
# other two after it in slot order, cyclically (the stand-in's; an agent then finds the object it moves in one place).
OBSERVATIONS = ("slots", "selected-first")


def scene_arrays(scene) -> dict:
    """Fixed-shape surface arrays of a `sim.scenes.Scene` (float64 / bool numpy)."""
    n = len(scene.surfaces)
    if n > S_MAX:
        raise ValueError(f"scene {scene.name!r} has {n} surfaces; geometry.S_MAX is {S_MAX}")
    center = np.zeros((S_MAX, 3))
    half = np.zeros((S_MAX, 2))
    mask = np.zeros(S_MAX, dtype=bool)
    for i, s in enumerate(scene.surfaces):
        center[i] = s.center
        half[i] = s.half
        mask[i] = True
    return {
        "surface_center": center,
        "surface_half": half,
        "surface_mask": mask,
        "move_scale": np.asarray(scene.move_scale, dtype=np.float64),
        "scene_index": np.int32(scene.index),
        "camera_position": np.asarray(scene.camera_position, dtype=np.float64),
        "camera_rotation": np.asarray(scene.camera_rotation, dtype=np.float64),
    }


def stacked_scene_arrays(scenes) -> dict:
    """`scene_arrays` of several scenes stacked on a leading axis (for a JAX rollout that cycles scenes)."""
    arrays = [scene_arrays(s) for s in scenes]
    return {key: np.stack([a[key] for a in arrays]) for key in arrays[0]}


def _drop(geo: dict, k, a, xp):
    """The displacement move: (surface, target x, target z, whether a surface catches the object)."""
    p, h = geo["object_pos"][k], geo["object_half"][k]
    center, shalf, mask, scale = geo["surface_center"], geo["surface_half"], geo["surface_mask"], geo["move_scale"]
    tx = p[0] + a[0] * scale[0]
    tb = (p[1] - h[1]) + a[1] * scale[1]
    tz = p[2] + a[2] * scale[2]
    cx, top, cz = center[:, 0], center[:, 1], center[:, 2]
    under = mask & (xp.abs(tx - cx) <= shalf[:, 0]) & (xp.abs(tz - cz) <= shalf[:, 1])
    catch = under & (top <= tb + DROP_TOL) & (tb - top <= MAX_DROP)
    return xp.argmax(xp.where(catch, top, -xp.inf)), tx, tz, xp.any(catch)


def _pick(geo: dict, k, a, xp, point: bool = False):
    """The surface moves: a_0 picks one of the scene's surfaces, lowest to highest in equal bins of [-1, 1] (so
    that a_0 reads as a height in every scene); a_1 and a_2 the place on it (-1 and 1 put the object's edge on
    the surface's edges), or with `point` a point of the room the object comes as near as the surface allows."""
    h = geo["object_half"][k]
    center, shalf, mask = geo["surface_center"], geo["surface_half"], geo["surface_mask"]
    n = xp.sum(mask)
    by_height = xp.argsort(xp.where(mask, center[:, 1], xp.inf), stable=True)
    s = by_height[xp.clip(xp.floor((a[0] + 1.0) / 2.0 * n), 0, n - 1).astype(xp.int32)]
    room_x, room_z = xp.maximum(shalf[s, 0] - h[0], 0.0), xp.maximum(shalf[s, 1] - h[2], 0.0)
    if point:
        tx = center[s, 0] + xp.clip(a[1] * POS_SCALE - center[s, 0], -room_x, room_x)
        tz = center[s, 2] + xp.clip(a[2] * POS_SCALE - center[s, 2], -room_z, room_z)
    else:
        tx = center[s, 0] + a[1] * room_x
        tz = center[s, 2] + a[2] * room_z
    return s, tx, tz, n > 0


def target(geo: dict, k, action, xp=np, move: str = "displacement"):
    """Where active object k would come to rest under `action` (a `MOVES` rule): (centre [3], surface index,
    valid)."""
    pos, half = geo["object_pos"], geo["object_half"]
    a = xp.clip(xp.asarray(action, dtype=pos.dtype), -1.0, 1.0)
    if check_move(move) == "displacement":
        s, tx, tz, found = _drop(geo, k, a, xp)
    else:
        s, tx, tz, found = _pick(geo, k, a, xp, point=move == "surface-point")
    h, center, shalf = half[k], geo["surface_center"], geo["surface_half"]
    inside = (xp.abs(tx - center[s, 0]) + h[0] <= shalf[s, 0] + EPS) & (
        xp.abs(tz - center[s, 2]) + h[2] <= shalf[s, 1] + EPS
    )
    ny = center[s, 1] + h[1]
    new = xp.stack([tx, ny, tz])
    overlap = (
        (xp.abs(new[0] - pos[:, 0]) < h[0] + half[:, 0] - EPS)
        & (xp.abs(new[1] - pos[:, 1]) < h[1] + half[:, 1] - EPS)
        & (xp.abs(new[2] - pos[:, 2]) < h[2] + half[:, 2] - EPS)
        & (xp.arange(pos.shape[0]) != k)
    )
    valid = found & inside & ~xp.any(overlap)
    return new, s, valid


def check_move(move: str) -> str:
    if move not in MOVES:
        raise ValueError(f"move rule {move!r} is not one of {', '.join(MOVES)}")
    return move


def check_observation(order: str) -> str:
    if order not in OBSERVATIONS:
        raise ValueError(f"observation order {order!r} is not one of {', '.join(OBSERVATIONS)}")
    return order


def move(geo: dict, k, action, xp=np, move: str = "displacement"):
    """Apply the move of active object k: (new geo, valid). The state is unchanged when the move is invalid."""
    new, s, valid = target(geo, k, action, xp, move)
    pos = geo["object_pos"]
    sel = (xp.arange(pos.shape[0]) == k) & valid
    out = dict(geo)
    out["object_pos"] = xp.where(sel[:, None], new[None, :], pos)
    out["object_surface"] = xp.where(sel, s, geo["object_surface"]).astype(geo["object_surface"].dtype)
    return out, valid


def observation(geo: dict, selected, xp=np, order: str = "slots"):
    """The environment's 32-float observation (layout in `sim.env`) from the geometry arrays, as float32; the
    objects in slot order, or (`OBSERVATIONS`) starting with the selected one."""
    k = selected
    s = geo["object_surface"][k]
    c, h = geo["surface_center"][s], geo["surface_half"][s]
    norm = xp.asarray([1.0 / POS_SCALE, 1.0 / Y_MID, 1.0 / POS_SCALE])
    shift = xp.asarray([0.0, 1.0, 0.0])
    pos = geo["object_pos"] * norm - shift
    if check_observation(order) == "selected-first":  # the slots rotated: the selected one, then the next two
        pos = pos[(xp.arange(pos.shape[0]) + k) % pos.shape[0]]
    objects = xp.concatenate([pos, xp.zeros_like(pos)], axis=1).reshape(-1)  # rotations are all zero
    head = xp.stack(
        [
            xp.asarray(k, dtype=c.dtype) - 1.0,
            2.0 * xp.asarray(geo["scene_index"], dtype=c.dtype) / (N_SCENES_TOTAL - 1) - 1.0,
            2.0 * h[0] / POS_SCALE,
            c[1] / POS_SCALE,
            2.0 * h[1] / POS_SCALE,
        ]
    )
    return xp.concatenate(
        [
            head,
            c * norm - shift,
            objects,
            geo["camera_position"] * norm - shift,
            geo["camera_rotation"] / 180.0,
        ]
    ).astype(xp.float32)


def state_is_valid(geo: dict, xp=np):
    """Every active object rests on its surface (bottom on the top face), inside it, and no two overlap."""
    pos, half, surf = geo["object_pos"], geo["object_half"], geo["object_surface"]
    center, shalf, mask = geo["surface_center"], geo["surface_half"], geo["surface_mask"]
    c, sh = center[surf], shalf[surf]
    on = mask[surf] & (xp.abs(pos[:, 1] - half[:, 1] - c[:, 1]) <= 1e-4)
    inside = (xp.abs(pos[:, 0] - c[:, 0]) + half[:, 0] <= sh[:, 0] + EPS) & (
        xp.abs(pos[:, 2] - c[:, 2]) + half[:, 2] <= sh[:, 1] + EPS
    )
    d = xp.abs(pos[:, None, :] - pos[None, :, :])
    lim = half[:, None, :] + half[None, :, :] - EPS
    pair = xp.all(d < lim, axis=-1) & ~xp.eye(pos.shape[0], dtype=bool)
    return xp.all(on & inside) & ~xp.any(pair)


def move_scalar(surfaces, pos, half, k: int, a0: float, a1: float, a2: float, scale, move: str = "displacement"):
    """`target` in plain Python floats (the env's hot path; same operations in the same order).

    surfaces: sequence of (cx, top, cz, hx, hz); pos, half: three (x, y, z) sequences; scale: (sx, sy, sz).
    Returns (valid, (x, y, z), surface index) with the resting centre of the target (meaningless if invalid).
    """
    a0 = -1.0 if a0 < -1.0 else (1.0 if a0 > 1.0 else a0)
    a1 = -1.0 if a1 < -1.0 else (1.0 if a1 > 1.0 else a1)
    a2 = -1.0 if a2 < -1.0 else (1.0 if a2 > 1.0 else a2)
    hx, hy, hz = half[k]
    if move != "displacement":
        by_height = sorted(range(len(surfaces)), key=lambda i: surfaces[i][1])
        best = by_height[min(max(int(np.floor((a0 + 1.0) / 2.0 * len(surfaces))), 0), len(surfaces) - 1)]
        cx, top, cz, shx, shz = surfaces[best]
        room_x, room_z = max(shx - hx, 0.0), max(shz - hz, 0.0)
        if move == "surface-point":
            tx = cx + min(max(a1 * POS_SCALE - cx, -room_x), room_x)
            tz = cz + min(max(a2 * POS_SCALE - cz, -room_z), room_z)
        else:
            tx = cx + a1 * room_x
            tz = cz + a2 * room_z
    else:
        px, py, pz = pos[k]
        tx = px + a0 * scale[0]
        tb = (py - hy) + a1 * scale[1]
        tz = pz + a2 * scale[2]
        best, best_top = -1, -np.inf
        for i, (cx, top, cz, shx, shz) in enumerate(surfaces):
            if (
                abs(tx - cx) <= shx
                and abs(tz - cz) <= shz
                and top <= tb + DROP_TOL
                and tb - top <= MAX_DROP
                and top > best_top
            ):
                best, best_top = i, top
        if best < 0:
            return False, (tx, tb + hy, tz), -1
        cx, top, cz, shx, shz = surfaces[best]
    ny = top + hy
    if not (abs(tx - cx) + hx <= shx + EPS and abs(tz - cz) + hz <= shz + EPS):
        return False, (tx, ny, tz), best
    for j in range(len(pos)):
        if j == k:
            continue
        qx, qy, qz = pos[j]
        gx, gy, gz = half[j]
        if abs(tx - qx) < hx + gx - EPS and abs(ny - qy) < hy + gy - EPS and abs(tz - qz) < hz + gz - EPS:
            return False, (tx, ny, tz), best
    return True, (tx, ny, tz), best


def surface_tuples(scene) -> tuple:
    """(cx, top, cz, hx, hz) per designated surface, the form `move_scalar` takes."""
    return tuple((s.center[0], s.center[1], s.center[2], s.half[0], s.half[1]) for s in scene.surfaces)

"""Pure-numpy ray-cast renderer (no GPU, no display).

Per scene and image size a `View` is built once and cached: one ray per (super-sampled) pixel and the static
background (room + furniture) as colour and depth (distance along the ray) buffers. A frame copies the cached
buffers and ray-casts only the objects' primitives, each inside its projected screen-space bounding box,
against that depth: the cost of a frame grows with the objects' screen area, not with the scene.
Small images are rendered at a higher resolution and box-filtered down (anti-aliasing).
"""

from __future__ import annotations

import math

import numpy as np

from sim.objects import OBJECTS, ObjectSpec
from sim.scenes import Scene, camera_basis

FOV_Y_DEG = 60.0
LIGHT = np.array([-0.35, 1.0, -0.45]) / np.linalg.norm([-0.35, 1.0, -0.45])
AMBIENT, DIFFUSE = 0.45, 0.55
_MISS = np.float32(np.inf)


def _shade(colour, ndotl):
    """uint8 colours [..., 3] of base `colour` lit with lambert term `ndotl` [...]."""
    light = AMBIENT + DIFFUSE * np.maximum(ndotl, 0.0)
    return np.clip(light[..., None] * (255.0 * np.asarray(colour, dtype=np.float32)), 0, 255).astype(np.uint8)


def _box_hit(origin, dirs, inv, center, half):
    """Ray / axis-aligned box: (t [...], ndotl [...]); t = inf where missed."""
    lo = np.asarray(center) - np.asarray(half)
    hi = np.asarray(center) + np.asarray(half)
    t1 = (lo - origin).astype(np.float32) * inv
    t2 = (hi - origin).astype(np.float32) * inv
    tnear = np.minimum(t1, t2)
    tmin = tnear.max(-1)
    tmax = np.maximum(t1, t2).min(-1)
    hit = (tmax >= tmin) & (tmin > 1e-3)
    axis = tnear.argmax(-1)
    # The entry face's normal points against the ray along the entry axis.
    d_axis = np.take_along_axis(dirs, axis[..., None], -1)[..., 0]
    ndotl = -np.sign(d_axis) * LIGHT[axis].astype(np.float32)
    return np.where(hit, tmin, _MISS), ndotl


def _cylinder_hit(origin, dirs, center, half):
    """Ray / vertical cylinder (radius half[0], half height half[1]) with both caps."""
    r, hh = half[0], half[1]
    ox, oy, oz = (origin[i] - center[i] for i in range(3))
    dx, dy, dz = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    a = dx * dx + dz * dz
    b = 2.0 * (ox * dx + oz * dz)
    c = ox * ox + oz * oz - r * r
    disc = b * b - 4.0 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        ts = (-b - np.sqrt(disc)) / (2.0 * a)
        ys = oy + ts * dy
        side = (disc >= 0) & (np.abs(ys) <= hh) & (ts > 1e-3)
        t_side = np.where(side, ts, _MISS)
        cap_y = hh if oy > hh else -hh  # the cap facing the camera
        tc = (cap_y - oy) / dy
        px, pz = ox + tc * dx, oz + tc * dz
        cap = (px * px + pz * pz <= r * r) & (tc > 1e-3)
    t_cap = np.where(cap, tc, _MISS)
    use_cap = t_cap < t_side
    t = np.minimum(t_cap, t_side)
    xs, zs = (ox + ts * dx) / r, (oz + ts * dz) / r
    ndotl_side = xs * LIGHT[0] + zs * LIGHT[2]
    ndotl_cap = np.float32(LIGHT[1] if cap_y > 0 else -LIGHT[1])
    return t, np.where(use_cap, ndotl_cap, ndotl_side)


def _ellipsoid_hit(origin, dirs, center, half):
    s = np.asarray(half, dtype=np.float32)
    o = ((np.asarray(origin) - np.asarray(center)) / np.asarray(half)).astype(np.float32)
    d = dirs / s
    a = (d * d).sum(-1)
    b = 2.0 * (d @ o)
    c = float(o @ o) - 1.0
    disc = b * b - 4.0 * a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / (2.0 * a)
    hit = (disc >= 0) & (t > 1e-3)
    n = (o + t[..., None] * d) / s  # gradient of the implicit surface
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
    return np.where(hit, t, _MISS), n @ LIGHT.astype(np.float32)


class View:
    """Rays and static background of one scene at one image size."""

    def __init__(self, scene: Scene, height: int, width: int):
        self.scene, self.height, self.width = scene, height, width
        self.ss = max(1, min(4, math.ceil(160 / min(height, width))))
        H, W = height * self.ss, width * self.ss
        self.origin = np.asarray(scene.camera_position, dtype=np.float64)
        self.forward, self.right, self.up = (np.asarray(v) for v in camera_basis(scene.camera_rotation))
        self.focal = 0.5 * H / math.tan(math.radians(FOV_Y_DEG) / 2)
        jj, ii = np.meshgrid(np.arange(W) + 0.5 - W / 2, np.arange(H) + 0.5 - H / 2)
        dirs = self.forward + (jj / self.focal)[..., None] * self.right - (ii / self.focal)[..., None] * self.up
        dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
        self.dirs = dirs.astype(np.float32)
        with np.errstate(divide="ignore"):
            self.inv = (1.0 / np.where(np.abs(self.dirs) < 1e-9, 1e-9, self.dirs)).astype(np.float32)
        self.colour, self.depth = self._background()

    def _background(self):
        scene, dirs, inv, o = self.scene, self.dirs, self.inv, self.origin
        rx, ry, rz = scene.room_half
        lo, hi = np.array([-rx, 0.0, -rz]), np.array([rx, 2 * ry, rz])
        # Inside the room box every ray leaves through the nearest face ahead of it.
        t_faces = np.where(dirs > 0, (hi - o) * inv, (lo - o) * inv)
        axis = t_faces.argmin(-1)
        depth = t_faces.min(-1).astype(np.float32)
        colour = np.empty(dirs.shape, dtype=np.uint8)
        d_axis = np.take_along_axis(dirs, axis[..., None], -1)[..., 0]
        ndotl = -np.sign(d_axis) * LIGHT[axis]
        p = o + depth[..., None] * dirs
        floor = (axis == 1) & (dirs[..., 1] < 0)
        checker = ((np.floor(p[..., 0] / 0.5) + np.floor(p[..., 2] / 0.5)) % 2).astype(bool)
        wall = _shade(scene.wall_colour, ndotl * 0.6 + 0.25)
        colour[:] = wall
        colour[floor & checker] = _shade(scene.floor_colours[0], ndotl)[floor & checker]
        colour[floor & ~checker] = _shade(scene.floor_colours[1], ndotl)[floor & ~checker]
        colour[(axis == 1) & (dirs[..., 1] > 0)] = _shade((0.95, 0.95, 0.95), np.full(depth.shape, 0.3))[0, 0]
        # Skirting board: a dark band where the walls meet the floor.
        colour[(axis != 1) & (p[..., 1] < 0.08)] = (60, 50, 45)
        for box in scene.boxes:
            t, nl = _box_hit(o, dirs, inv, box.center, box.half)
            near = t < depth
            depth = np.where(near, t, depth)
            colour[near] = _shade(box.colour, nl)[near]
        return colour, depth

    def project(self, point) -> tuple[float, float, float]:
        """(row, column, distance along forward) of a world point in super-sampled pixel coordinates."""
        d = np.asarray(point, dtype=np.float64) - self.origin
        z = float(d @ self.forward)
        x, y = float(d @ self.right), float(d @ self.up)
        H, W = self.height * self.ss, self.width * self.ss
        return H / 2 - self.focal * y / z, W / 2 + self.focal * x / z, z

    def _bbox(self, center, half):
        """Screen rectangle (r0, r1, c0, c1) covering a world box, or None if off screen."""
        H, W = self.height * self.ss, self.width * self.ss
        c, h = np.asarray(center, dtype=np.float64), np.asarray(half, dtype=np.float64)
        corners = c + h * np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        d = corners - self.origin
        z = d @ self.forward
        if (z <= 1e-3).any():
            return 0, H, 0, W
        rows = H / 2 - self.focal * (d @ self.up) / z
        cols = W / 2 + self.focal * (d @ self.right) / z
        r0, r1 = max(0, int(math.floor(rows.min()))), min(H, int(math.ceil(rows.max())) + 1)
        c0, c1 = max(0, int(math.floor(cols.min()))), min(W, int(math.ceil(cols.max())) + 1)
        if r0 >= r1 or c0 >= c1:
            return None
        return r0, r1, c0, c1

    def render(self, objects) -> np.ndarray:
        """uint8 [H, W, 3] image with `objects` = [(ObjectSpec or catalogue index, centre (x, y, z)), ...]."""
        colour = self.colour.copy()
        depth = self.depth.copy()
        for spec, position in objects:
            if not isinstance(spec, ObjectSpec):
                spec = OBJECTS[int(spec)]
            for prim in spec.primitives:
                center = tuple(position[a] + prim.offset[a] for a in range(3))
                box = self._bbox(center, prim.half)
                if box is None:
                    continue
                r0, r1, c0, c1 = box
                dirs = self.dirs[r0:r1, c0:c1]
                if prim.kind == "box":
                    t, nl = _box_hit(self.origin, dirs, self.inv[r0:r1, c0:c1], center, prim.half)
                elif prim.kind == "cylinder":
                    t, nl = _cylinder_hit(self.origin, dirs, center, prim.half)
                elif prim.kind == "ellipsoid":
                    t, nl = _ellipsoid_hit(self.origin, dirs, center, prim.half)
                else:
                    raise ValueError(f"unknown primitive kind {prim.kind!r} in object {spec.name!r}")
                sub_depth = depth[r0:r1, c0:c1]
                near = t < sub_depth
                if not near.any():
                    continue
                sub_depth[near] = t[near]
                colour[r0:r1, c0:c1][near] = _shade(prim.colour, nl[near])
        if self.ss == 1:
            return colour
        s = self.ss
        small = colour.reshape(self.height, s, self.width, s, 3).astype(np.uint16).sum((1, 3))
        return ((small + (s * s) // 2) // (s * s)).astype(np.uint8)


_VIEWS: dict = {}


def view(scene: Scene, height: int, width: int) -> View:
    """The cached `View` of a scene at an image size (built on first use)."""
    key = (scene.index, int(height), int(width))
    v = _VIEWS.get(key)
    if v is None:
        v = _VIEWS[key] = View(scene, int(height), int(width))
    return v


def image_shape(image_size) -> tuple[int, int]:
    """(H, W) from an int (square) or an (H, W) pair."""
    if isinstance(image_size, (int, np.integer)):
        h = w = int(image_size)
    else:
        h, w = (int(v) for v in image_size)
    if h < 8 or w < 8:
        raise ValueError(f"image_size {image_size!r} is too small; need at least 8 x 8 pixels")
    return h, w


def render(scene: Scene, objects, image_size=224) -> np.ndarray:
    h, w = image_shape(image_size)
    return view(scene, h, w).render(objects)

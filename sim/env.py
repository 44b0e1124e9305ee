"""Gymnasium environment: an agent moves one of three objects per step in an indoor scene (paper 4.1-4.2).

Observation (32 float32, roughly in [-1, 1]; positions: x/3, y/1.5 - 1, z/3 in metres; angles: degrees/180):
    [0]      active slot of the object to move now (0, 1, 2) mapped to -1, 0, 1
    [1]      global scene index (0-7) mapped to [-1, 1]
    [2:5]    size of the surface under that object: width x / 3, top height / 3, depth z / 3
    [5:8]    centre of that surface (x, top height, z), normalised as positions
    [8:26]   the three active objects: position (3) then rotation (3) each, in slot order, or with
             `observation="selected-first"` the selected one first and the next slots after it (cyclically)
    [26:32]  camera position (3) and rotation (3)
Action: [-1, 1]^3, a displacement of the selected object, or with `move="surface"` a designated surface and a
place on it, or with `move="surface-point"` a surface and a point of the room to come nearest (see
`sim.geometry` for the exact rules).
Reward: +1 for a valid move, -1 for an invalid one (paper Eq. 2); an invalid move changes nothing.
The vector is `sim.geometry.observation` of the state (numpy here; jax.numpy in `rls3_jax.envs.jax_sim`).
Each episode uses the next scene of the split (starting at a seeded random one); which object moves next and
when an active object is swapped with one from the container (after valid moves) are drawn from a seeded RNG.
"""

from __future__ import annotations

import math
import random

import gymnasium as gym
import numpy as np

from sim import geometry
from sim.objects import OBJECT_NAMES, OBJECTS
from sim.render import image_shape, view
from sim.scenes import SPLITS, camera_basis, scenes_for_split

OBS_SIZE = 32


def place_objects(rng: random.Random, scene, catalogue_indices, tries: int = 200):
    """Random valid resting places for the given catalogue objects: (positions, surface indices).

    Each object picks a random designated surface it fits on and a uniform spot inside it, rejected while it
    overlaps an object placed before it.
    """
    surfaces = geometry.surface_tuples(scene)
    for _ in range(50):
        pos, surf, half = [], [], []
        for idx in catalogue_indices:
            hx, hy, hz = OBJECTS[idx].half
            fits = [i for i, s in enumerate(surfaces) if s[3] >= hx and s[4] >= hz]
            if not fits:
                raise ValueError(f"object {OBJECTS[idx].name!r} fits on no surface of scene {scene.name!r}")
            for _ in range(tries):
                s = fits[rng.randrange(len(fits))]
                cx, top, cz, shx, shz = surfaces[s]
                x = cx + rng.uniform(-(shx - hx), shx - hx)
                z = cz + rng.uniform(-(shz - hz), shz - hz)
                y = top + hy
                if all(
                    not (
                        abs(x - q[0]) < hx + g[0] and abs(y - q[1]) < hy + g[1] and abs(z - q[2]) < hz + g[2]
                    )
                    for q, g in zip(pos, half)
                ):
                    pos.append([x, y, z])
                    surf.append(s)
                    half.append((hx, hy, hz))
                    break
            else:
                break
        if len(pos) == len(catalogue_indices):
            return pos, surf
    raise RuntimeError(f"could not place objects {catalogue_indices} in scene {scene.name!r}")


def camera_dict(scene) -> dict:
    forward, _, _ = camera_basis(scene.camera_rotation)
    return {
        "position": [float(v) for v in scene.camera_position],
        "rotation": [float(v) for v in scene.camera_rotation],
        "forward": [float(v) for v in forward],
    }


def make_metadata(scene, split: str, moved: int, catalogue_indices, positions) -> dict:
    """The sample schema: scene, split, moved slot, the three objects and the camera (plain Python types)."""
    return {
        "scene": int(scene.index),
        "scene_name": scene.name,
        "split": split,
        "moved": int(moved),
        "objects": [
            {"name": OBJECT_NAMES[i], "position": [float(v) for v in p], "rotation": [0.0, 0.0, 0.0]}
            for i, p in zip(catalogue_indices, positions)
        ],
        "camera": camera_dict(scene),
    }


def validate_metadata(md: dict) -> None:
    """Raise ValueError naming the first field of `md` that breaks the sample schema of `make_metadata`."""
    from sim.scenes import SCENES

    def fail(what):
        raise ValueError(f"sample metadata: {what}")

    if not isinstance(md, dict) or set(md) != {"scene", "scene_name", "split", "moved", "objects", "camera"}:
        fail(f"keys {sorted(md) if isinstance(md, dict) else type(md)} differ from the schema")
    if type(md["scene"]) is not int or not 0 <= md["scene"] < len(SCENES):
        fail(f"scene {md['scene']!r} is not a scene index")
    scene = SCENES[md["scene"]]
    if md["scene_name"] != scene.name:
        fail(f"scene_name {md['scene_name']!r} is not scene {md['scene']}'s name {scene.name!r}")
    if md["split"] not in SPLITS or scene not in scenes_for_split(md["split"]):
        fail(f"split {md['split']!r} does not hold scene {scene.name!r}")
    if type(md["moved"]) is not int or not 0 <= md["moved"] < geometry.N_ACTIVE:
        fail(f"moved {md['moved']!r} is not an active slot")

    def vec(v, where):
        if not (
            isinstance(v, list) and len(v) == 3 and all(type(x) is float and math.isfinite(x) for x in v)
        ):
            fail(f"{where} {v!r} is not a list of three finite floats")

    objects = md["objects"]
    if not isinstance(objects, list) or len(objects) != geometry.N_ACTIVE:
        fail(f"objects must be a list of {geometry.N_ACTIVE}")
    for i, o in enumerate(objects):
        if (
            not isinstance(o, dict)
            or set(o) != {"name", "position", "rotation"}
            or o["name"] not in OBJECT_NAMES
        ):
            fail(f"objects[{i}] = {o!r} is not {{name (catalogue), position, rotation}}")
        vec(o["position"], f"objects[{i}].position")
        vec(o["rotation"], f"objects[{i}].rotation")
    if len({o["name"] for o in objects}) != len(objects):
        fail("object names repeat")
    cam = md["camera"]
    if not isinstance(cam, dict) or set(cam) != {"position", "rotation", "forward"}:
        fail(f"camera {cam!r} is not {{position, rotation, forward}}")
    for key in ("position", "rotation", "forward"):
        vec(cam[key], f"camera.{key}")


def check_env_arguments(who: str, split, render_mode, valid_per_episode, max_episode_steps) -> None:
    """The argument checks every environment with this interface shares (the simulator, the Unity adapter)."""
    if split not in SPLITS:
        raise ValueError(f"{who}: unknown split {split!r}; expected one of {SPLITS}")
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"{who}: unknown render_mode {render_mode!r}; expected None or 'rgb_array'")
    for name, v in (("valid_per_episode", valid_per_episode), ("max_episode_steps", max_episode_steps)):
        if v is not None and int(v) < 1:
            raise ValueError(f"{who}: {name} must be a positive int or None, got {v!r}")


class IndoorSceneEnv(gym.Env):
    """See the module docstring. `geometry_state()` exposes the state as `sim.geometry` arrays."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        split: str = "train",
        image_size=224,
        render_mode: str | None = None,
        valid_per_episode: int | None = None,
        max_episode_steps: int | None = None,
        swap_prob: float = 0.1,
        move: str = "displacement",
        observation: str = "slots",
    ):
        check_env_arguments("IndoorSceneEnv", split, render_mode, valid_per_episode, max_episode_steps)
        self.move = geometry.check_move(move)
        self.observation = geometry.check_observation(observation)
        if not 0.0 <= swap_prob <= 1.0:
            raise ValueError(f"IndoorSceneEnv: swap_prob must be in [0, 1], got {swap_prob!r}")
        self.split = split
        self.image_shape = image_shape(image_size)
        self.render_mode = render_mode
        self.valid_per_episode = valid_per_episode
        self.max_episode_steps = max_episode_steps
        self.swap_prob = float(swap_prob)
        self.scenes = scenes_for_split(split)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(OBS_SIZE,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
        self._surface_tuples = [geometry.surface_tuples(s) for s in self.scenes]
        self._scene_arrays = [geometry.scene_arrays(s) for s in self.scenes]  # the observation's scene part
        self._rng: random.Random | None = None
        self._scene_start = 0
        self._episode = 0
        self._scene_slot = 0
        self.scene = self.scenes[0]
        self._ids: list[int] = []
        self._pos: list[list[float]] = []
        self._half: list[tuple[float, float, float]] = []
        self._surf: list[int] = []
        self._k = 0
        self._steps = 0
        self._valid = 0

    # ---- gymnasium API ----

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """New episode in the split's next scene (or `options={"scene": i}`, i indexing the split's scenes) with
        three random catalogue objects at random valid places. A seed restarts the whole random sequence
        (scene order, objects, places, selected objects, swaps). info holds the scene's "metadata"."""
        super().reset(seed=seed)
        if seed is not None or self._rng is None:
            self._rng = random.Random(int(self.np_random.integers(2**62)))
            self._scene_start = self._rng.randrange(len(self.scenes))
            self._episode = 0
        rng = self._rng
        if options and "scene" in options:
            slot = int(options["scene"])
            if not 0 <= slot < len(self.scenes):
                raise ValueError(
                    f"IndoorSceneEnv.reset: options['scene']={slot} outside 0..{len(self.scenes) - 1}"
                )
        else:
            slot = (self._scene_start + self._episode) % len(self.scenes)
        self._episode += 1
        self._scene_slot = slot
        self.scene = self.scenes[slot]
        self._ids = rng.sample(range(len(OBJECTS)), geometry.N_ACTIVE)
        self._pos, self._surf = place_objects(rng, self.scene, self._ids)
        self._half = [OBJECTS[i].half for i in self._ids]
        self._k = rng.randrange(geometry.N_ACTIVE)
        self._steps = 0
        self._valid = 0
        return self._obs(), {"metadata": self.sample_metadata()}

    def step(self, action):
        if isinstance(action, np.ndarray):
            if action.shape != (3,):
                raise ValueError(f"IndoorSceneEnv.step: action shape {action.shape}, expected (3,)")
            a0, a1, a2 = action.tolist()
        else:
            a0, a1, a2 = (float(v) for v in action)
        if not (math.isfinite(a0) and math.isfinite(a1) and math.isfinite(a2)):
            raise ValueError(f"IndoorSceneEnv.step: non-finite action {(a0, a1, a2)}")
        rng = self._rng
        if rng is None:
            raise RuntimeError("IndoorSceneEnv.step called before reset()")
        k = self._k
        valid, new, s = geometry.move_scalar(
            self._surface_tuples[self._scene_slot],
            self._pos,
            self._half,
            k,
            a0,
            a1,
            a2,
            self.scene.move_scale,
            self.move,
        )
        self._steps += 1
        if valid:
            self._pos[k] = list(new)
            self._surf[k] = s
            self._valid += 1
            if self.swap_prob > 0.0 and rng.random() < self.swap_prob:
                self._swap(rng.randrange(geometry.N_ACTIVE))
            info = {"valid": True, "metadata": self.sample_metadata(moved=k)}
        else:
            info = {"valid": False}
        self._k = rng.randrange(geometry.N_ACTIVE)
        truncated = (self.valid_per_episode is not None and self._valid >= self.valid_per_episode) or (
            self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        )
        return self._obs(), (1.0 if valid else -1.0), False, truncated, info

    def render(self):
        """The current camera image, uint8 [H, W, 3]."""
        h, w = self.image_shape
        return view(self.scene, h, w).render(list(zip(self._ids, self._pos)))

    # ---- state access ----

    @property
    def selected(self) -> int:
        """Active slot (0-2) of the object the next step moves."""
        return self._k

    @property
    def active_objects(self) -> list[str]:
        return [OBJECT_NAMES[i] for i in self._ids]

    def geometry_state(self) -> dict:
        """The current state as `sim.geometry` arrays (float64 / bool / int32 numpy copies) plus "selected"."""
        geo = geometry.scene_arrays(self.scene)
        geo["object_pos"] = np.array(self._pos, dtype=np.float64)
        geo["object_half"] = np.array(self._half, dtype=np.float64)
        geo["object_surface"] = np.array(self._surf, dtype=np.int32)
        geo["selected"] = np.int32(self._k)
        return geo

    def sample_metadata(self, moved: int | None = None) -> dict:
        """Metadata of the current scene (schema in `make_metadata`)."""
        return make_metadata(
            self.scene, self.split, self._k if moved is None else moved, self._ids, self._pos
        )

    # ---- internals ----

    def _swap(self, slot: int) -> None:
        """Replace the object in `slot` with a random one from the container, resting in a valid spot."""
        rng = self._rng
        container = [i for i in range(len(OBJECTS)) if i not in self._ids]
        new_id = container[rng.randrange(len(container))]
        hx, hy, hz = OBJECTS[new_id].half
        surfaces = self._surface_tuples[self._scene_slot]
        others = [(self._pos[j], self._half[j]) for j in range(geometry.N_ACTIVE) if j != slot]

        def free(x, y, z):
            return all(
                not (abs(x - q[0]) < hx + g[0] and abs(y - q[1]) < hy + g[1] and abs(z - q[2]) < hz + g[2])
                for q, g in others
            )

        # Prefer the old object's spot on the same surface; otherwise a random free spot.
        cx, top, cz, shx, shz = surfaces[self._surf[slot]]
        x, z = self._pos[slot][0], self._pos[slot][2]
        candidates = []
        if abs(x - cx) + hx <= shx and abs(z - cz) + hz <= shz:
            candidates.append((self._surf[slot], x, z))
        for _ in range(50):
            s = rng.randrange(len(surfaces))
            cx, top, cz, shx, shz = surfaces[s]
            if shx < hx or shz < hz:
                continue
            candidates.append(
                (s, cx + rng.uniform(-(shx - hx), shx - hx), cz + rng.uniform(-(shz - hz), shz - hz))
            )
            break
        for s, x, z in candidates:
            y = surfaces[s][1] + hy
            if free(x, y, z):
                self._ids[slot] = new_id
                self._pos[slot] = [x, y, z]
                self._half[slot] = (hx, hy, hz)
                self._surf[slot] = s
                return

    def _obs(self) -> np.ndarray:
        geo = dict(self._scene_arrays[self._scene_slot])
        geo["object_pos"] = np.array(self._pos)
        geo["object_surface"] = np.array(self._surf)
        return geometry.observation(geo, self._k, order=self.observation)

"""The simulator's feasibility dynamics as pure JAX functions, for fully jitted intrinsic pretraining.

`JaxSceneEnv` mirrors `sim.IndoorSceneEnv` without images: the same observation (`sim.geometry.observation`,
the simulator's own builder, with xp=jax.numpy), the same move rule (`sim.geometry.move`), the same reward
(+1 valid / -1 invalid), the same random choice of the object to move next, the same swaps with container
objects after valid moves, the same truncation. It is stateless: `reset(key)` and `step(env_state, action, key)` are pure functions of an `EnvState` pytree, so a
whole rollout runs inside `lax.scan`.

Initial scenes come from a bank of resets drawn once with the simulator's own placement routine
(`sim.env.place_objects`), so episodes start from the simulator's exact distribution of valid scenes; the
Python simulator cycles scenes from a random start, the bank is sampled uniformly (the same marginal).
Arithmetic is float32 where the simulator uses float64; tests check that both agree on validity, reward,
next positions and observations for the same states and actions.
"""

from __future__ import annotations

import dataclasses
import random

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from sim import geometry
from sim.env import IndoorSceneEnv, place_objects
from sim.objects import OBJECT_HALF, OBJECTS


@struct.dataclass
class EnvState:
    scene: jax.Array  # int32 (): slot of the scene within the split
    ids: jax.Array  # int32 (3,): catalogue index of each active object
    pos: jax.Array  # float32 (3, 3): centre of each active object's bounding box
    half: jax.Array  # float32 (3, 3): half-size of each active object's bounding box
    surf: jax.Array  # int32 (3,): surface each active object rests on
    k: jax.Array  # int32 (): active slot the next step moves
    steps: jax.Array  # int32 (): steps in this episode
    valid_count: jax.Array  # int32 (): valid moves in this episode


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a static argument of jitted rollouts
class JaxSceneEnv:
    surface_center: jax.Array  # (n_scenes, S_MAX, 3)
    surface_half: jax.Array  # (n_scenes, S_MAX, 2)
    surface_mask: jax.Array  # (n_scenes, S_MAX)
    move_scale: jax.Array  # (n_scenes, 3)
    scene_index: jax.Array  # (n_scenes,): global scene index 0-7
    camera_position: jax.Array  # (n_scenes, 3)
    camera_rotation: jax.Array  # (n_scenes, 3): Unity Euler degrees
    object_half: jax.Array  # (9, 3) catalogue half-sizes
    bank: EnvState  # initial scenes, leading axis = bank entries (k, steps, valid_count unused)
    valid_per_episode: int | None = None
    max_episode_steps: int | None = None
    swap_prob: float = 0.1
    move: str = "displacement"  # sim.geometry.MOVES
    observation: str = "slots"  # sim.geometry.OBSERVATIONS

    # ---- pure functions ----

    def reset(self, key: jax.Array) -> tuple[EnvState, jax.Array]:
        k_entry, k_slot = jax.random.split(key)
        entry = jax.random.randint(k_entry, (), 0, self.bank.scene.shape[0])
        state = jax.tree_util.tree_map(lambda x: x[entry], self.bank)
        state = state.replace(k=jax.random.randint(k_slot, (), 0, geometry.N_ACTIVE),
                              steps=jnp.zeros((), jnp.int32), valid_count=jnp.zeros((), jnp.int32))
        return state, self.observe(state)

    def step(self, state: EnvState, action: jax.Array, key: jax.Array):
        """-> (state, obs, reward, terminated, truncated, valid), as `IndoorSceneEnv.step` without info."""
        k_swap, k_slot, k_next = jax.random.split(key, 3)
        geo, valid = geometry.move(self._geometry(state), state.k, action, xp=jnp, move=self.move)
        moved = state.replace(pos=geo["object_pos"], surf=geo["object_surface"])
        swap = valid & (jax.random.uniform(k_swap) < self.swap_prob)
        swapped = self._swap(moved, jax.random.randint(k_slot, (), 0, geometry.N_ACTIVE), k_next)
        moved = jax.tree_util.tree_map(lambda s, m: jnp.where(swap, s, m), swapped, moved)
        steps = state.steps + 1
        valid_count = state.valid_count + valid.astype(jnp.int32)
        k_pick = jax.random.fold_in(k_next, 1)
        new = moved.replace(k=jax.random.randint(k_pick, (), 0, geometry.N_ACTIVE), steps=steps,
                            valid_count=valid_count)
        truncated = jnp.zeros((), bool)
        if self.valid_per_episode is not None:
            truncated |= valid_count >= self.valid_per_episode
        if self.max_episode_steps is not None:
            truncated |= steps >= self.max_episode_steps
        reward = jnp.where(valid, 1.0, -1.0).astype(jnp.float32)
        return new, self.observe(new), reward, jnp.zeros((), bool), truncated, valid

    def observe(self, state: EnvState) -> jax.Array:
        """The 32-float observation: `sim.geometry.observation`, the builder `sim.IndoorSceneEnv` uses."""
        return geometry.observation(self._geometry(state), state.k, xp=jnp, order=self.observation)

    # ---- helpers ----

    def _geometry(self, state: EnvState) -> dict:
        return {
            "surface_center": self.surface_center[state.scene],
            "surface_half": self.surface_half[state.scene],
            "surface_mask": self.surface_mask[state.scene],
            "move_scale": self.move_scale[state.scene],
            "scene_index": self.scene_index[state.scene],
            "camera_position": self.camera_position[state.scene],
            "camera_rotation": self.camera_rotation[state.scene],
            "object_pos": state.pos,
            "object_half": state.half,
            "object_surface": state.surf,
        }

    def _swap(self, state: EnvState, slot: jax.Array, key: jax.Array) -> EnvState:
        """`IndoorSceneEnv._swap`: a random container object takes `slot`, at the old spot if it fits and is
        free, else at one random spot on a random surface it fits on if free; otherwise nothing changes."""
        k_id, k_surface, k_x, k_z = jax.random.split(key, 4)
        in_use = jnp.zeros(self.object_half.shape[0], bool).at[state.ids].set(True)
        new_id = _uniform_among(k_id, ~in_use)
        h = self.object_half[new_id]
        center, shalf = self.surface_center[state.scene], self.surface_half[state.scene]
        others = jnp.arange(geometry.N_ACTIVE) != slot

        def free(p):
            overlap = jnp.all(jnp.abs(p[None] - state.pos) < h[None] + state.half, axis=1)
            return ~jnp.any(overlap & others)

        s_old = state.surf[slot]
        x_old, z_old = state.pos[slot, 0], state.pos[slot, 2]
        old_fits = (jnp.abs(x_old - center[s_old, 0]) + h[0] <= shalf[s_old, 0]) & (
            jnp.abs(z_old - center[s_old, 2]) + h[2] <= shalf[s_old, 1])
        p_old = jnp.stack([x_old, center[s_old, 1] + h[1], z_old])

        fits = self.surface_mask[state.scene] & (shalf[:, 0] >= h[0]) & (shalf[:, 1] >= h[2])
        s_new = _uniform_among(k_surface, fits)
        x_new = center[s_new, 0] + jax.random.uniform(k_x, minval=-1.0, maxval=1.0) * (shalf[s_new, 0] - h[0])
        z_new = center[s_new, 2] + jax.random.uniform(k_z, minval=-1.0, maxval=1.0) * (shalf[s_new, 1] - h[2])
        p_new = jnp.stack([x_new, center[s_new, 1] + h[1], z_new])

        use_old = old_fits & free(p_old)
        use_new = ~use_old & jnp.any(fits) & free(p_new)
        p = jnp.where(use_old, p_old, p_new)
        s = jnp.where(use_old, s_old, s_new)
        change = use_old | use_new
        at = (jnp.arange(geometry.N_ACTIVE) == slot) & change
        return state.replace(
            ids=jnp.where(at, new_id, state.ids).astype(jnp.int32),
            pos=jnp.where(at[:, None], p[None], state.pos),
            half=jnp.where(at[:, None], h[None], state.half),
            surf=jnp.where(at, s, state.surf).astype(jnp.int32),
        )


def _uniform_among(key: jax.Array, mask: jax.Array) -> jax.Array:
    """A uniformly drawn index where `mask` holds (index 0 if none does)."""
    return jnp.argmax(jnp.where(mask, jax.random.uniform(key, mask.shape), -1.0))


def from_python_env(env: IndoorSceneEnv, bank_size: int = 2048, seed: int = 0) -> JaxSceneEnv:
    """A `JaxSceneEnv` with the scenes, truncation and swap probability of `env` (its split)."""
    if bank_size <= 0:
        raise ValueError(f"from_python_env: bank_size must be positive, got {bank_size}")
    scenes = env.scenes
    arrays = geometry.stacked_scene_arrays(scenes)
    rng = random.Random(seed)
    bank = {"scene": [], "ids": [], "pos": [], "half": [], "surf": []}
    for i in range(bank_size):
        slot = i % len(scenes)
        ids = rng.sample(range(len(OBJECTS)), geometry.N_ACTIVE)
        pos, surf = place_objects(rng, scenes[slot], ids)
        for name, value in (("scene", slot), ("ids", ids), ("pos", pos), ("half", OBJECT_HALF[ids]),
                            ("surf", surf)):
            bank[name].append(value)
    zeros = jnp.zeros((bank_size,), jnp.int32)
    bank_state = EnvState(
        scene=jnp.asarray(bank["scene"], jnp.int32), ids=jnp.asarray(bank["ids"], jnp.int32),
        pos=jnp.asarray(np.array(bank["pos"]), jnp.float32), half=jnp.asarray(np.array(bank["half"]), jnp.float32),
        surf=jnp.asarray(bank["surf"], jnp.int32), k=zeros, steps=zeros, valid_count=zeros,
    )
    return JaxSceneEnv(
        surface_center=jnp.asarray(arrays["surface_center"], jnp.float32),
        surface_half=jnp.asarray(arrays["surface_half"], jnp.float32),
        surface_mask=jnp.asarray(arrays["surface_mask"]),
        move_scale=jnp.asarray(arrays["move_scale"], jnp.float32),
        scene_index=jnp.asarray(arrays["scene_index"], jnp.int32),
        camera_position=jnp.asarray(arrays["camera_position"], jnp.float32),
        camera_rotation=jnp.asarray(arrays["camera_rotation"], jnp.float32),
        object_half=jnp.asarray(OBJECT_HALF, jnp.float32),
        bank=bank_state,
        valid_per_episode=env.valid_per_episode,
        max_episode_steps=env.max_episode_steps,
        swap_prob=env.swap_prob,
        move=env.move,
        observation=env.observation,
    )


def state_from_python(env: IndoorSceneEnv) -> EnvState:
    """The Python simulator's current state as an `EnvState` (for tests and hand-overs)."""
    geo = env.geometry_state()
    return EnvState(
        scene=jnp.asarray(env._scene_slot, jnp.int32),
        ids=jnp.asarray(env._ids, jnp.int32),
        pos=jnp.asarray(geo["object_pos"], jnp.float32),
        half=jnp.asarray(geo["object_half"], jnp.float32),
        surf=jnp.asarray(geo["object_surface"], jnp.int32),
        k=jnp.asarray(geo["selected"], jnp.int32),
        steps=jnp.asarray(env._steps, jnp.int32),
        valid_count=jnp.asarray(env._valid, jnp.int32),
    )

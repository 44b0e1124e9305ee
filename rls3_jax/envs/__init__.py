"""Environments the RLS3 loop drives, in one package:

| module | what |
|---|---|
| `make_env` (here) | the run's environment from its `RunConfig`: the stand-in simulator `sim.IndoorSceneEnv` or Unity |
| `jax_sim` | the simulator's feasibility rules as pure JAX functions (`JaxSceneEnv`), for jitted pretraining |
| `vector` | N environments feeding one agent (`--num-envs N`) |
| `unity`, `metadata_channel`, `fake_unity_player` | the Unity build through ML-Agents (docs/unity.md) |

The Unity adapter is imported only when asked for, since it needs the optional 'unity' extra.
"""

from __future__ import annotations

ENV_KINDS = ("sim", "unity")


def make_env(config, split: str = "train", image_size=224, **episodes):
    """The run's environment for `split` (a `rls3_jax.config.RunConfig` picks sim or Unity and Unity's build,
    port, timeout and seed), rendering `image_size` images; `episodes` may give `valid_per_episode` /
    `max_episode_steps` (truncation)."""
    if config.env == "unity":
        from rls3_jax.envs.unity import UnityEnv

        return UnityEnv(build_path=config.unity_build, port=config.unity_port, split=split,
                        image_size=image_size, timeout_s=config.unity_timeout_s, seed=config.seed, **episodes)
    if config.env != "sim":
        raise ValueError(f"make_env: unknown environment {config.env!r}; expected one of {ENV_KINDS}")
    if config.unity_build is not None or config.unity_port is not None:
        raise ValueError("make_env: --unity-build/--unity-port given but the environment is 'sim'; add --env unity")
    import sim

    return sim.IndoorSceneEnv(split=split, image_size=image_size, render_mode="rgb_array", move=config.move,
                              observation=config.observation_order, **episodes)

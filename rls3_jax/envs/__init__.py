"""Environments the RLS3 loop can drive: the stand-in simulator or a Unity build (docs/unity.md).

`make_env` builds either from the loop's options; the Unity adapter is imported only when asked for, since it
needs the optional 'unity' extra.
"""

from __future__ import annotations

ENV_KINDS = ("sim", "unity")


def make_env(
    kind: str = "sim",
    *,
    split: str = "train",
    image_size=224,
    render_mode: str | None = None,
    valid_per_episode: int | None = None,
    max_episode_steps: int | None = None,
    unity_build: str | None = None,
    unity_port: int | None = None,
    unity_timeout: float = 60.0,
):
    """`sim.IndoorSceneEnv` (kind "sim") or `UnityIndoorSceneEnv` (kind "unity": `unity_build` launches a
    build, else attach to an editor/player on `unity_port`, default 5004)."""
    common = dict(
        split=split,
        image_size=image_size,
        render_mode=render_mode,
        valid_per_episode=valid_per_episode,
        max_episode_steps=max_episode_steps,
    )
    if kind == "sim":
        if unity_build is not None or unity_port is not None:
            raise ValueError(
                "make_env: --unity-build/--unity-port given but the environment is 'sim'; add --env unity"
            )
        from sim import IndoorSceneEnv

        return IndoorSceneEnv(**common)
    if kind == "unity":
        from rls3_jax.envs.unity import UnityIndoorSceneEnv

        return UnityIndoorSceneEnv(**common, build=unity_build, port=unity_port, timeout_s=unity_timeout)
    raise ValueError(f"make_env: unknown environment {kind!r}; expected one of {ENV_KINDS}")

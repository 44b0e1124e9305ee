"""`import sim` registers the stand-in simulator with Gymnasium as RLS3/IndoorScene-v0."""

import importlib
import warnings

import gymnasium
import numpy as np
from gymnasium.utils.env_checker import check_env

import sim

KWARGS = {"split": "test", "image_size": 64, "render_mode": "rgb_array"}


def _made():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the environment checker's complaints arrive as warnings
        return gymnasium.make("RLS3/IndoorScene-v0", **KWARGS)


def test_make_builds_the_env_with_its_arguments():
    env = _made()
    assert env.spec.entry_point == "sim.env:IndoorSceneEnv"
    assert isinstance(env.unwrapped, sim.IndoorSceneEnv)
    assert env.unwrapped.split == "test" and env.unwrapped.render_mode == "rgb_array"
    assert env.unwrapped.image_shape == sim.IndoorSceneEnv(**KWARGS).image_shape
    env.close()


def test_made_env_matches_a_direct_one_step_for_step():
    made, direct = _made(), sim.IndoorSceneEnv(**KWARGS)
    made.action_space.seed(11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker wrapper inspects the first reset and step
        obs, info = made.reset(seed=7)
        direct_obs, direct_info = direct.reset(seed=7)
        np.testing.assert_array_equal(obs, direct_obs)
        assert info == direct_info
        for _ in range(5):
            action = made.action_space.sample()
            got, want = made.step(action), direct.step(action)
            np.testing.assert_array_equal(got[0], want[0])
            assert got[1:] == want[1:]
            image = made.render()
            assert image.dtype == np.uint8 and image.shape[-1] == 3
            np.testing.assert_array_equal(image, direct.render())
    made.close()


def test_make_takes_max_episode_steps_as_a_time_limit():
    env = gymnasium.make("RLS3/IndoorScene-v0", max_episode_steps=3, valid_per_episode=50, **KWARGS)
    assert (env.unwrapped.max_episode_steps, env.unwrapped.valid_per_episode) == (None, 50)
    env.reset(seed=0)
    assert [env.step(env.action_space.sample())[3] for _ in range(3)] == [False, False, True]
    env.close()


def test_the_env_passes_gymnasiums_full_checker_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(_made().unwrapped)  # with the spec, so it also tries the other render modes


def test_reloading_sim_does_not_register_twice():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium warns when an id is overridden
        importlib.reload(sim)
    assert [env_id for env_id in gymnasium.registry if env_id.startswith("RLS3/")] == ["RLS3/IndoorScene-v0"]
    assert isinstance(_made().unwrapped, sim.IndoorSceneEnv)

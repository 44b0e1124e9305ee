"""The Gymnasium environment: API, determinism, observation layout, validity, metadata, scenes."""

import json

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim
from sim import geometry
from sim.env import validate_metadata
from sim.objects import OBJECTS
from sim.scenes import TEST_SCENES, TRAIN_SCENES


@pytest.mark.filterwarnings("ignore:.*not having a spec")
@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize("render_mode", [None, "rgb_array"])
def test_check_env(split, render_mode):
    env = sim.IndoorSceneEnv(split=split, image_size=32, render_mode=render_mode)
    check_env(env, skip_render_check=render_mode is None)


def test_observations_stay_in_space():
    for split in ("train", "test"):
        env = sim.IndoorSceneEnv(split=split, max_episode_steps=50, swap_prob=0.3)
        obs, _ = env.reset(seed=1)
        env.action_space.seed(1)
        for _ in range(600):
            assert env.observation_space.contains(obs)
            obs, _, _, trunc, _ = env.step(env.action_space.sample())
            if trunc:
                obs, _ = env.reset()


def _run(env, seed, n=300):
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    out = [obs]
    for _ in range(n):
        obs, r, term, trunc, info = env.step(rng.uniform(-1, 1, 3).astype(np.float32))
        out.append((obs, r, trunc, json.dumps(info.get("metadata"))))
        if trunc:
            out.append(env.reset()[0])
    return out


def _same(a, b):
    for x, y in zip(a, b):
        if isinstance(x, tuple):
            np.testing.assert_array_equal(x[0], y[0])
            assert x[1:] == y[1:]
        else:
            np.testing.assert_array_equal(x, y)


def test_determinism_under_seed():
    a = _run(sim.IndoorSceneEnv(max_episode_steps=40), seed=7)
    b = _run(sim.IndoorSceneEnv(max_episode_steps=40), seed=7)
    _same(a, b)
    c = _run(sim.IndoorSceneEnv(max_episode_steps=40), seed=8)
    assert any(
        not np.array_equal(x[0] if isinstance(x, tuple) else x, y[0] if isinstance(y, tuple) else y)
        for x, y in zip(a, c)
    )


def test_reseeding_the_same_env_repeats():
    env = sim.IndoorSceneEnv(max_episode_steps=25)
    _same(_run(env, seed=3, n=80), _run(env, seed=3, n=80))


def test_scenes_cycle_per_episode():
    env = sim.IndoorSceneEnv(split="train")
    env.reset(seed=0)
    names = [env.scene.name]
    for _ in range(9):
        env.reset()
        names.append(env.scene.name)
    assert len(set(names[:5])) == 5 and names[:5] == names[5:]
    env = sim.IndoorSceneEnv(split="test")
    env.reset(seed=0, options={"scene": 2})
    assert env.scene is TEST_SCENES[2]


def test_observation_layout():
    env = sim.IndoorSceneEnv(split="test")
    obs, _ = env.reset(seed=5)
    geo = env.geometry_state()
    k = env.selected
    assert obs.shape == (32,) and obs.dtype == np.float32
    assert obs[0] == k - 1
    assert obs[1] == pytest.approx(2 * env.scene.index / 7 - 1)
    s = geo["object_surface"][k]
    cx, top, cz = geo["surface_center"][s]
    hx, hz = geo["surface_half"][s]
    np.testing.assert_allclose(
        obs[2:8], [2 * hx / 3, top / 3, 2 * hz / 3, cx / 3, top / 1.5 - 1, cz / 3], rtol=1e-6
    )
    for i, p in enumerate(geo["object_pos"]):
        np.testing.assert_allclose(
            obs[8 + 6 * i : 11 + 6 * i], [p[0] / 3, p[1] / 1.5 - 1, p[2] / 3], rtol=1e-6
        )
    cam = env.scene.camera_position
    np.testing.assert_allclose(obs[26:29], [cam[0] / 3, cam[1] / 1.5 - 1, cam[2] / 3], rtol=1e-6)
    np.testing.assert_allclose(obs[29:32], np.array(env.scene.camera_rotation) / 180, rtol=1e-6)


def test_selected_first_observation_rotates_the_object_slots():
    slots, first = sim.IndoorSceneEnv(split="train"), sim.IndoorSceneEnv(split="train", observation="selected-first")
    a, _ = slots.reset(seed=3)
    b, _ = first.reset(seed=3)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(12):
        k = slots.selected
        seen.add(k)
        objects = a[8:26].reshape(3, 6)
        np.testing.assert_array_equal(b[8:26].reshape(3, 6), objects[[(k + i) % 3 for i in range(3)]])
        np.testing.assert_array_equal(np.delete(b, range(8, 26)), np.delete(a, range(8, 26)))
        action = rng.uniform(-0.3, 0.3, 3).astype(np.float32)
        a, b = slots.step(action)[0], first.step(action)[0]
    assert seen == {0, 1, 2}
    with pytest.raises(ValueError, match="sideways"):
        sim.IndoorSceneEnv(observation="sideways")


def test_array_observation_matches_env():
    jax = pytest.importorskip("jax")
    observe = jax.jit(lambda g, k: geometry.observation(g, k, xp=jax.numpy))
    env = sim.IndoorSceneEnv(split="train", max_episode_steps=30)
    obs, _ = env.reset(seed=9)
    rng = np.random.default_rng(9)
    for i in range(120):
        geo = env.geometry_state()
        np.testing.assert_allclose(geometry.observation(geo, geo["selected"]), obs, rtol=1e-6, atol=1e-7)
        if i % 40 == 0:
            jax_obs = observe(geo, geo["selected"])
            np.testing.assert_allclose(np.asarray(jax_obs), obs, rtol=1e-5, atol=1e-6)
        obs, _, _, trunc, _ = env.step(rng.uniform(-1, 1, 3))
        if trunc:
            obs, _ = env.reset()


def test_one_observation_builder_gives_the_same_vector_under_numpy_and_jax_numpy():
    """The simulator and its JAX port (rls3_jax.envs.jax_sim) both build the observation with
    sim.geometry.observation: numpy and jax.numpy agree on every scene and every selected slot."""
    jax = pytest.importorskip("jax")
    observe = jax.jit(lambda g, k: geometry.observation(g, k, xp=jax.numpy))
    for split in ("train", "test"):
        env = sim.IndoorSceneEnv(split=split)
        for slot in range(len(env.scenes)):
            obs, _ = env.reset(seed=slot, options={"scene": slot})
            geo = env.geometry_state()
            np.testing.assert_array_equal(obs, geometry.observation(geo, env.selected))
            per_slot = []
            for k in range(geometry.N_ACTIVE):
                with_numpy = geometry.observation(geo, k)
                with_jax = np.asarray(observe(geo, k))
                assert with_numpy.dtype == with_jax.dtype == np.float32 and with_jax.shape == (32,)
                np.testing.assert_allclose(with_jax, with_numpy, rtol=1e-6, atol=1e-6)
                per_slot.append(with_numpy)
            assert len({row[0] for row in per_slot}) == geometry.N_ACTIVE  # the slot is in the vector


def test_step_matches_geometry_and_invalid_changes_nothing():
    env = sim.IndoorSceneEnv(swap_prob=0.0)
    env.reset(seed=11)
    rng = np.random.default_rng(0)
    counts = {True: 0, False: 0}
    for _ in range(300):
        geo = env.geometry_state()
        action = rng.uniform(-1, 1, 3)
        expect, expect_valid = geometry.move(geo, int(geo["selected"]), action)
        _, reward, _, _, info = env.step(action)
        counts[info["valid"]] += 1
        assert info["valid"] == bool(expect_valid)
        assert reward == (1.0 if info["valid"] else -1.0)
        after = env.geometry_state()
        np.testing.assert_array_equal(after["object_pos"], expect["object_pos"])
        np.testing.assert_array_equal(after["object_surface"], expect["object_surface"])
        assert bool(geometry.state_is_valid(after))
        if not info["valid"]:
            assert "metadata" not in info
    assert counts[True] > 20 and counts[False] > 20


def test_random_agent_valid_fraction_is_learnable():
    for split in ("train", "test"):
        env = sim.IndoorSceneEnv(split=split, max_episode_steps=100)
        env.reset(seed=0)
        env.action_space.seed(0)
        valid = 0
        for _ in range(3000):
            _, r, _, trunc, _ = env.step(env.action_space.sample())
            valid += r > 0
            if trunc:
                env.reset()
        assert 0.1 < valid / 3000 < 0.5


def test_truncation():
    env = sim.IndoorSceneEnv(valid_per_episode=5)
    env.reset(seed=0)
    n_valid, trunc = 0, False
    for _ in range(500):
        _, r, term, trunc, _ = env.step(np.zeros(3, np.float32))  # staying put is always valid
        assert not term
        n_valid += r > 0
        if trunc:
            break
    assert trunc and n_valid == 5
    env = sim.IndoorSceneEnv(max_episode_steps=3)
    env.reset(seed=0)
    truncs = [env.step(np.ones(3, np.float32))[3] for _ in range(3)]
    assert truncs == [False, False, True]


def test_swaps_bring_container_objects():
    env = sim.IndoorSceneEnv(swap_prob=1.0)
    env.reset(seed=2)
    seen = set(env.active_objects)
    for _ in range(60):
        env.step(np.zeros(3))
        assert len(set(env.active_objects)) == 3
        assert bool(geometry.state_is_valid(env.geometry_state()))
        seen |= set(env.active_objects)
    assert len(seen) >= 7


def check_metadata(md, split):
    validate_metadata(md)
    assert md["split"] == split
    assert np.linalg.norm(md["camera"]["forward"]) == pytest.approx(1.0)
    assert md["camera"]["forward"][1] < 0  # looking down at the furniture
    assert json.loads(json.dumps(md)) == md


def test_validate_metadata_rejects_bad_samples():
    env = sim.IndoorSceneEnv(split="test")
    env.reset(seed=0)
    good = env.sample_metadata()
    validate_metadata(good)
    bad = json.loads(json.dumps(good))
    bad["objects"][1]["position"] = [0.0, 1.0]
    with pytest.raises(ValueError, match=r"objects\[1\].position"):
        validate_metadata(bad)
    bad = json.loads(json.dumps(good))
    bad["split"] = "train"
    with pytest.raises(ValueError, match="split"):
        validate_metadata(bad)
    bad = dict(good, moved=np.int64(1))
    with pytest.raises(ValueError, match="moved"):
        validate_metadata(bad)


def test_metadata_schema_and_caption():
    from rls3_jax.prompts import describe_pair

    env = sim.IndoorSceneEnv(split="val")
    env.reset(seed=4)
    found = 0
    for _ in range(100):
        _, _, _, _, info = env.step(np.zeros(3))
        if info["valid"]:
            found += 1
            check_metadata(info["metadata"], "val")
            assert info["metadata"] == env.sample_metadata(moved=info["metadata"]["moved"])
            assert describe_pair(info["metadata"], 0, 1)["caption"].startswith("The ")
    assert found == 100


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="split"):
        sim.IndoorSceneEnv(split="training")
    with pytest.raises(ValueError, match="render_mode"):
        sim.IndoorSceneEnv(render_mode="human")
    with pytest.raises(ValueError, match="valid_per_episode"):
        sim.IndoorSceneEnv(valid_per_episode=0)
    env = sim.IndoorSceneEnv()
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(np.zeros(3, np.float32))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan, 0, 0], np.float32))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(4, np.float32))


def test_scenes():
    assert len(TRAIN_SCENES) == 5 and len(TEST_SCENES) == 3
    assert [s.index for s in sim.SCENES] == list(range(8))
    names = {"kitchen", "bedroom", "living room", "dining room", "office"}
    assert {s.name for s in TRAIN_SCENES} == names
    for scene in sim.SCENES:
        assert 2 <= len(scene.surfaces) <= geometry.S_MAX
        assert len({round(s.center[1], 2) for s in scene.surfaces}) >= 2  # vertical relations occur
        for i, a in enumerate(scene.surfaces):
            for b in scene.surfaces[i + 1 :]:  # surfaces never overlap seen from above
                assert (
                    abs(a.center[0] - b.center[0]) >= a.half[0] + b.half[0]
                    or abs(a.center[2] - b.center[2]) >= a.half[1] + b.half[1]
                ), (scene.name, a.name, b.name)
        for obj in OBJECTS:  # every object fits somewhere
            assert any(s.half[0] >= obj.half[0] and s.half[1] >= obj.half[1] for s in scene.surfaces)


def test_train_and_test_share_no_layout():
    def layout(scene):
        return {(s.center, s.half) for s in scene.surfaces}

    for a in TRAIN_SCENES:
        for b in TEST_SCENES:
            assert a.name != b.name
            assert not (layout(a) & layout(b)), (a.name, b.name)
            assert not ({box.center for box in a.boxes} & {box.center for box in b.boxes}), (a.name, b.name)
            assert a.camera_position != b.camera_position and a.camera_rotation != b.camera_rotation

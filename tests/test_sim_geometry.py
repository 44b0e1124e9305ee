"""Feasibility rules: every invalid case, scalar / numpy / jax.numpy agreement, hypothesis fuzzing."""

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import geometry
from sim.env import place_objects
from sim.objects import OBJECT_HALF, OBJECTS, object_index
from sim.scenes import SCENES, TRAIN_SCENES


def make_geo(scene, names, positions_on):
    """geo with objects `names` resting on (surface index, dx, dz) offsets from the surface centres."""
    geo = geometry.scene_arrays(scene)
    half = np.array([OBJECT_HALF[object_index(n)] for n in names])
    pos, surf = [], []
    for (s, dx, dz), h in zip(positions_on, half):
        c = scene.surfaces[s].center
        pos.append([c[0] + dx, c[1] + h[1], c[2] + dz])
        surf.append(s)
    geo.update(object_pos=np.array(pos), object_half=half, object_surface=np.array(surf, dtype=np.int32))
    assert geometry.state_is_valid(geo)
    return geo


def scalar_move(geo, k, action, move="displacement"):
    # Padding rows get a negative half-size: they contain no point, like a masked row. The surface rule counts
    # the scene's surfaces, so it gets the real rows alone (as the environment passes them).
    surfaces = [
        tuple(geo["surface_center"][i].tolist())
        + (tuple(geo["surface_half"][i].tolist()) if m else (-1.0, -1.0))
        for i, m in enumerate(geo["surface_mask"])
        if m or move == "displacement"
    ]
    return geometry.move_scalar(
        surfaces,
        geo["object_pos"].tolist(),
        geo["object_half"].tolist(),
        k,
        *map(float, action),
        geo["move_scale"].tolist(),
        move,
    )


KITCHEN = TRAIN_SCENES[0]
SX, SY, SZ = KITCHEN.move_scale
NAMES = ("cup", "plate", "red book")


def surf(name):
    return [s.name for s in KITCHEN.surfaces].index(name)


TABLE, COUNTER, STOOL = surf("kitchen table"), surf("counter"), surf("stool")
RANK = {s: r for r, s in enumerate(np.argsort([x.center[1] for x in KITCHEN.surfaces]))}  # surface -> height rank


def kitchen_geo():
    # cup on the kitchen table's centre, plate on the counter, book on the stool
    return make_geo(KITCHEN, NAMES, [(TABLE, 0.0, 0.0), (COUNTER, 0.0, 0.0), (STOOL, 0.0, 0.0)])


def _assert_unchanged(geo, action, k=0):
    new, valid = geometry.move(geo, k, action)
    assert not bool(valid)
    for key in geo:
        np.testing.assert_array_equal(new[key], geo[key])
    assert not scalar_move(geo, k, action)[0]


def test_valid_move_on_same_surface():
    geo = kitchen_geo()
    new, valid = geometry.move(geo, 0, [0.5, 0.2, -0.4])
    assert bool(valid)
    np.testing.assert_allclose(new["object_pos"][0], geo["object_pos"][0] + [0.5 * SX, 0.0, -0.4 * SZ])
    assert new["object_surface"][0] == TABLE
    np.testing.assert_array_equal(new["object_pos"][1:], geo["object_pos"][1:])
    assert geometry.state_is_valid(new)


def test_off_surface_is_invalid():
    # Cup at the table's front edge; a full step forward (towards the camera) lands over the floor.
    table = KITCHEN.surfaces[TABLE]
    cup_hz = OBJECT_HALF[object_index("cup")][2]
    geo = make_geo(
        KITCHEN, NAMES, [(TABLE, 0.0, -(table.half[1] - cup_hz)), (COUNTER, 0.0, 0.0), (STOOL, 0.0, 0.0)]
    )
    _assert_unchanged(geo, [0.0, 0.0, -1.0])


def test_out_of_bounds_is_invalid():
    # Centre still over the table but the cup's footprint sticks out over the edge.
    table = KITCHEN.surfaces[TABLE]
    cup_hz = OBJECT_HALF[object_index("cup")][2]
    dz = -(table.half[1] - cup_hz) + 0.05  # 5 cm inside the allowed band
    geo = make_geo(KITCHEN, NAMES, [(TABLE, 0.0, dz), (COUNTER, 0.0, 0.0), (STOOL, 0.0, 0.0)])
    _assert_unchanged(geo, [0.0, 0.0, -0.07 / SZ])  # 7 cm towards the edge
    assert bool(geometry.move(geo, 0, [0.0, 0.0, -0.03 / SZ])[1])  # 3 cm is fine


def test_overlap_is_invalid():
    geo = make_geo(
        KITCHEN, ("cup", "plate", "red book"), [(TABLE, -0.3, 0.0), (TABLE, 0.15, 0.0), (STOOL, 0.0, 0.0)]
    )
    _assert_unchanged(geo, [0.3 / SX, 0.0, 0.0])  # 30 cm right: into the plate
    # Touching is allowed: move the cup exactly next to the plate.
    gap = 0.45 - (OBJECT_HALF[object_index("cup")][0] + OBJECT_HALF[object_index("plate")][0])
    assert bool(geometry.move(geo, 0, [gap / SX, 0.0, 0.0])[1])


def test_vertical_rules():
    geo = kitchen_geo()  # cup on the table
    _assert_unchanged(geo, [0.0, -0.5, 0.0])  # pushed 20 cm into the table
    assert bool(geometry.move(geo, 0, [0.0, -0.04 / SY, 0.0])[1])  # 4 cm low: within DROP_TOL, settles on top
    assert not bool(geometry.move(geo, 0, [0.0, -0.06 / SY, 0.0])[1])
    # Lifted higher than MAX_DROP above the table: thrown, invalid (needs a larger vertical scale).
    high = dict(geo, move_scale=np.array([SX, 1.0, SZ]))
    _assert_unchanged(high, [0.0, geometry.MAX_DROP + 0.05, 0.0])
    assert bool(geometry.move(high, 0, [0.0, geometry.MAX_DROP - 0.05, 0.0])[1])


def test_move_onto_higher_surface():
    # The stool is just left of the kitchen table, which is higher: lift the cup over onto the table.
    stool, table = KITCHEN.surfaces[STOOL], KITCHEN.surfaces[TABLE]
    cup = OBJECT_HALF[object_index("cup")]
    on_stool = stool.half[0] - cup[0] - 0.005  # at the stool's right edge
    geo = make_geo(
        KITCHEN, ("cup", "plate", "red book"), [(STOOL, on_stool, 0.0), (COUNTER, 0.0, 0.0), (2, 0.0, 0.0)]
    )
    dx = (table.center[0] - table.half[0] + cup[0] + 0.005) - geo["object_pos"][0, 0]
    assert dx < SX
    lift = table.center[1] - stool.center[1]
    assert 0 < lift < SY
    _assert_unchanged(geo, [dx / SX, 0.0, 0.0])  # not lifted: the table would be pushed through
    new, valid = geometry.move(geo, 0, [dx / SX, (lift + 0.02) / SY, 0.0])
    assert bool(valid)
    assert new["object_surface"][0] == TABLE
    assert new["object_pos"][0, 1] == pytest.approx(table.center[1] + cup[1])
    # And back down onto the stool: dropped.
    back, valid = geometry.move(new, 0, [-dx / SX, 0.0, 0.0])
    assert bool(valid) and back["object_surface"][0] == STOOL


def test_highest_catching_surface_wins():
    scene = KITCHEN
    geo = geometry.scene_arrays(scene)
    # Two stacked test surfaces at the same place: the higher one (not above the target) catches.
    geo["surface_center"][5] = [3.0, 0.3, 3.0]
    geo["surface_half"][5] = [0.5, 0.5]
    geo["surface_center"][6] = [3.0, 0.5, 3.0]
    geo["surface_half"][6] = [0.5, 0.5]
    geo["surface_mask"][5:7] = True
    half = np.tile([0.05, 0.05, 0.05], (3, 1))
    geo.update(
        object_pos=np.array([[3.0, 0.35, 3.0], [2.0, 0.95, 2.0], [-2.0, 0.95, -2.0]]),
        object_half=half,
        object_surface=np.array([5, 0, 0], dtype=np.int32),
    )
    up = [0.0, 0.25 / SY, 0.0]  # bottom 0.3 -> 0.55: the 0.5 surface
    new, valid = geometry.move(geo, 0, up)
    assert bool(valid) and new["object_surface"][0] == 6
    assert scalar_move(geo, 0, up)[2] == 6
    new, valid = geometry.move(geo, 0, [0.0, 0.05 / SY, 0.0])  # bottom 0.35: the 0.3 surface
    assert bool(valid) and new["object_surface"][0] == 5


def random_state(rng: random.Random, scene=None):
    scene = scene or SCENES[rng.randrange(len(SCENES))]
    ids = rng.sample(range(len(OBJECTS)), 3)
    pos, surf = place_objects(rng, scene, ids)
    geo = geometry.scene_arrays(scene)
    geo.update(
        object_pos=np.array(pos),
        object_half=OBJECT_HALF[ids].copy(),
        object_surface=np.array(surf, dtype=np.int32),
    )
    return geo


@pytest.mark.parametrize("move", geometry.MOVES)
def test_scalar_matches_numpy(move):
    rng = random.Random(0)
    n_valid = 0
    for _ in range(400):
        geo = random_state(rng)
        k = rng.randrange(3)
        action = [rng.uniform(-1.2, 1.2) for _ in range(3)]
        new, valid = geometry.move(geo, k, action, move=move)
        s_valid, s_pos, s_surf = scalar_move(geo, k, action, move)
        assert bool(valid) == s_valid
        if s_valid:
            n_valid += 1
            assert new["object_pos"][k].tolist() == list(s_pos)
            assert int(new["object_surface"][k]) == s_surf
    assert 40 < n_valid < 360


def _batch(n, seed):
    rng = random.Random(seed)
    geos = [random_state(rng) for _ in range(n)]
    ks = np.array([rng.randrange(3) for _ in range(n)], dtype=np.int32)
    actions = np.array([[rng.uniform(-1, 1) for _ in range(3)] for _ in range(n)])
    return geos, ks, actions


@pytest.mark.parametrize("move", geometry.MOVES)
def test_jax_matches_numpy(move):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    geos, ks, actions = _batch(256, 1)
    stacked = {key: np.stack([g[key] for g in geos]) for key in geos[0]}
    expect = [geometry.move(g, int(k), a, move=move) for g, k, a in zip(geos, ks, actions)]
    step = jax.jit(jax.vmap(lambda g, k, a: geometry.move(g, k, a, xp=jnp, move=move)))
    with jax.enable_x64(True):
        got, valid = step(stacked, ks, actions)
        valid = np.asarray(valid)
        for i, (e_geo, e_valid) in enumerate(expect):
            assert bool(valid[i]) == bool(e_valid)
            # XLA may fuse a multiply-add: equal up to the last bit.
            np.testing.assert_allclose(
                np.asarray(got["object_pos"][i]), e_geo["object_pos"], rtol=0, atol=1e-12
            )
            np.testing.assert_array_equal(np.asarray(got["object_surface"][i]), e_geo["object_surface"])
        assert 0 < valid.sum() < len(valid)
    # In float32 (the agent's precision) only boundary cases may differ.
    got32, valid32 = step(
        {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in stacked.items()},
        ks,
        actions.astype(np.float32),
    )
    agree = np.mean(np.asarray(valid32) == np.array([bool(v) for _, v in expect]))
    assert agree >= 0.98
    state_ok = jax.vmap(lambda g: geometry.state_is_valid(g, xp=jnp))(got32)
    assert bool(np.all(np.asarray(state_ok)))


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    k=st.integers(0, 2),
    action=st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=3, max_size=3),
)
def test_fuzz_moves_keep_state_valid(seed, k, action):
    for move in geometry.MOVES:
        _check_fuzzed_move(random_state(random.Random(seed)), k, action, move)


def _check_fuzzed_move(geo, k, action, move):
    new, valid = geometry.move(geo, k, action, move=move)
    if bool(valid):
        assert geometry.state_is_valid(new)
        others = [j for j in range(3) if j != k]
        np.testing.assert_array_equal(new["object_pos"][others], geo["object_pos"][others])
    else:
        for key in geo:
            np.testing.assert_array_equal(new[key], geo[key])
    assert scalar_move(geo, k, action, move)[0] == bool(valid)


def test_surface_move_picks_the_surface_and_the_place_on_it():
    geo = kitchen_geo()
    n = len(KITCHEN.surfaces)
    shelf = surf("wall shelf")
    pick = lambda s: -1.0 + (2 * RANK[s] + 1) / n  # the middle of surface s's bin of [-1, 1]
    for corner in ((-1.0, -1.0), (1.0, 1.0), (0.3, -0.6)):
        new, valid = geometry.move(geo, 0, [pick(shelf), *corner], move="surface")
        assert bool(valid) and int(new["object_surface"][0]) == shelf
        assert geometry.state_is_valid(new)
        c, h, half = KITCHEN.surfaces[shelf].center, KITCHEN.surfaces[shelf].half, OBJECT_HALF[object_index("cup")]
        expect = [c[0] + corner[0] * (h[0] - half[0]), c[1] + half[1], c[2] + corner[1] * (h[1] - half[2])]
        np.testing.assert_allclose(new["object_pos"][0], expect, atol=1e-12)
    # the bins go from the lowest surface to the highest and cover [-1, 1]
    tops = [x.center[1] for x in KITCHEN.surfaces]
    picked = [int(geometry.target(geo, 0, [a, 0.0, 0.0], move="surface")[1]) for a in np.linspace(-1, 1, 41)]
    assert picked[0] == int(np.argmin(tops)) and picked[-1] == shelf == int(np.argmax(tops))
    assert [tops[s] for s in picked] == sorted(tops[s] for s in picked)
    assert set(picked) == set(range(n))
    # onto the plate's spot on the counter: an overlap, invalid and nothing changes
    new, valid = geometry.move(geo, 0, [pick(COUNTER), 0.0, 0.0], move="surface")
    assert not bool(valid)
    np.testing.assert_array_equal(new["object_pos"], geo["object_pos"])


def test_surface_point_move_comes_nearest_the_named_point():
    geo = kitchen_geo()
    n = len(KITCHEN.surfaces)
    shelf = surf("wall shelf")
    pick = -1.0 + (2 * RANK[shelf] + 1) / n
    c, h, half = KITCHEN.surfaces[shelf].center, KITCHEN.surfaces[shelf].half, OBJECT_HALF[object_index("cup")]
    inner = (c[0] + 0.3 * (h[0] - half[0]), c[2] - 0.5 * (h[1] - half[2]))  # a point the cup can reach exactly
    far = (c[0] + 2.0, c[2] - 2.0)  # beyond the shelf's right and front edges: the nearest corner
    for (x, z), expect in ((inner, inner), (far, (c[0] + h[0] - half[0], c[2] - h[1] + half[2]))):
        action = [pick, x / geometry.POS_SCALE, z / geometry.POS_SCALE]
        new, valid = geometry.move(geo, 0, action, move="surface-point")
        assert bool(valid) and int(new["object_surface"][0]) == shelf and geometry.state_is_valid(new)
        np.testing.assert_allclose(new["object_pos"][0], [expect[0], c[1] + half[1], expect[1]], atol=1e-12)
    # the same a_0 picks the same surface as the "surface" rule
    for a0 in np.linspace(-1, 1, 17):
        assert int(geometry.target(geo, 0, [a0, 0.1, 0.2], move="surface-point")[1]) == int(
            geometry.target(geo, 0, [a0, 0.1, 0.2], move="surface")[1])
    # the point of an object on the counter, named on the counter: an overlap, invalid
    counter_obj = [j for j in range(3) if int(geo["object_surface"][j]) == COUNTER and j != 0][0]
    x, _, z = geo["object_pos"][counter_obj]
    action = [-1.0 + (2 * RANK[COUNTER] + 1) / n, x / geometry.POS_SCALE, z / geometry.POS_SCALE]
    assert not bool(geometry.move(geo, 0, action, move="surface-point")[1])


def test_surface_move_is_invalid_where_the_object_does_not_fit():
    geo = kitchen_geo()
    half = geo["surface_half"].copy()
    half[TABLE] = [0.05, 0.05]  # narrower than the cup
    geo["surface_half"] = half
    n = len(KITCHEN.surfaces)
    assert not bool(geometry.move(geo, 2, [-1.0 + (2 * RANK[TABLE] + 1) / n, 0.0, 0.0], move="surface")[1])


def test_unknown_move_rule_is_an_error():
    with pytest.raises(ValueError, match="teleport"):
        geometry.move(kitchen_geo(), 0, [0.0, 0.0, 0.0], move="teleport")


def test_scene_arrays_padding():
    geo = geometry.scene_arrays(KITCHEN)
    n = len(KITCHEN.surfaces)
    assert geo["surface_center"].shape == (geometry.S_MAX, 3)
    assert geo["surface_mask"].sum() == n and not geo["surface_mask"][n:].any()
    stacked = geometry.stacked_scene_arrays(SCENES)
    assert stacked["surface_center"].shape == (len(SCENES), geometry.S_MAX, 3)

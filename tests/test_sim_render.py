"""Renderer and generate_samples."""

import json

import numpy as np
import pytest

import sim
from sim import geometry
from sim.env import validate_metadata
from sim.objects import OBJECT_HALF, object_index
from sim.render import render, view
from sim.scenes import TRAIN_SCENES, camera_basis

KITCHEN = TRAIN_SCENES[0]


def _on_table(name, dx=0.0, dz=0.0):
    table = KITCHEN.surfaces[2]
    h = OBJECT_HALF[object_index(name)]
    return (object_index(name), (table.center[0] + dx, table.center[1] + h[1], table.center[2] + dz))


def _changed(img, background):
    return np.abs(img.astype(int) - background.astype(int)).sum(-1) > 30


def test_shape_dtype_and_sizes():
    for size, shape in ((224, (224, 224, 3)), (64, (64, 64, 3)), ((48, 80), (48, 80, 3))):
        img = render(KITCHEN, [_on_table("cup")], size)
        assert img.shape == shape and img.dtype == np.uint8
        assert img.std() > 10  # not blank
    env = sim.IndoorSceneEnv(image_size=(40, 56), render_mode="rgb_array")
    env.reset(seed=0)
    assert env.render().shape == (40, 56, 3)


@pytest.mark.parametrize("size", [224, 64])
def test_moving_left_in_world_moves_left_in_image(size):
    background = render(KITCHEN, [], size)
    _, right, _ = camera_basis(KITCHEN.camera_rotation)
    idx, p = _on_table("toaster", dx=0.2)
    q = tuple(p[i] - 0.4 * right[i] for i in range(3))  # 40 cm along the camera's left
    cols = []
    for pos in (p, q):
        mask = _changed(render(KITCHEN, [(idx, pos)], size), background)
        assert mask.sum() > 3
        cols.append(np.nonzero(mask)[1].mean())
    assert cols[1] < cols[0] - size * 0.05


def test_higher_surface_appears_higher_in_image():
    background = render(KITCHEN, [], 224)
    idx = object_index("cup")
    rows = []
    for surface in (KITCHEN.surfaces[3], KITCHEN.surfaces[1]):  # stool (0.6 m) vs wall shelf (1.3 m)
        pos = (surface.center[0], surface.center[1] + OBJECT_HALF[idx][1], surface.center[2])
        rows.append(np.nonzero(_changed(render(KITCHEN, [(idx, pos)], 224), background))[0].mean())
    assert rows[1] < rows[0]


def test_objects_look_different():
    images = [render(KITCHEN, [_on_table(n)], 96) for n in sim.OBJECT_NAMES]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i].astype(int) - images[j].astype(int)).sum() > 500, (i, j)


def test_occlusion_and_cache():
    # An object behind the sofa-like furniture or inside nothing: rendering twice gives the same image and the
    # cached background is not modified by a frame.
    v = view(KITCHEN, 64, 64)
    before = v.colour.copy()
    a = v.render([_on_table("lamp")])
    b = v.render([_on_table("lamp")])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(v.colour, before)
    # A nearer object hides a farther one where they overlap in the image.
    idx_book, near = _on_table("red book", dz=-0.25)
    idx_lamp, far = _on_table("lamp", dz=0.25)
    both = render(KITCHEN, [(idx_lamp, far), (idx_book, near)], 224)
    swapped = render(KITCHEN, [(idx_book, near), (idx_lamp, far)], 224)
    np.testing.assert_array_equal(both, swapped)  # depth test, not drawing order


def _resting_surface(scene, obj):
    x, y, z = obj["position"]
    h = OBJECT_HALF[object_index(obj["name"])]
    for i, s in enumerate(scene.surfaces):
        if (
            abs(y - h[1] - s.center[1]) < 1e-9
            and abs(x - s.center[0]) <= s.half[0]
            and abs(z - s.center[2]) <= s.half[1]
        ):
            return i
    raise AssertionError(f"{obj['name']} rests on no surface")


def test_generate_samples_deterministic_and_valid():
    images, metas = sim.generate_samples("test", 9, seed=3, image_size=48)
    images2, metas2 = sim.generate_samples("test", 9, seed=3, image_size=48)
    np.testing.assert_array_equal(images, images2)
    assert metas == metas2
    images3, _ = sim.generate_samples("test", 9, seed=4, image_size=48)
    assert not np.array_equal(images, images3)
    assert images.shape == (9, 48, 48, 3) and images.dtype == np.uint8
    assert [m["scene"] for m in metas[:3]] == [5, 6, 7]
    heights = set()
    for md in metas:
        validate_metadata(md)
        assert md["split"] == "test"
        scene = sim.SCENES[md["scene"]]
        geo = geometry.scene_arrays(scene)
        geo["object_pos"] = np.array([o["position"] for o in md["objects"]])
        geo["object_half"] = np.array([OBJECT_HALF[object_index(o["name"])] for o in md["objects"]])
        geo["object_surface"] = np.array([_resting_surface(scene, o) for o in md["objects"]], dtype=np.int32)
        assert bool(geometry.state_is_valid(geo))
        heights |= {
            round(o["position"][1] - OBJECT_HALF[object_index(o["name"])][1], 3) for o in md["objects"]
        }
    assert len(heights) >= 3
    json.dumps(metas)
    _, val = sim.generate_samples("val", 5, seed=0, image_size=32)
    assert sorted(m["scene"] for m in val) == [0, 1, 2, 3, 4] and all(m["split"] == "val" for m in val)
    with pytest.raises(ValueError, match="split"):
        sim.generate_samples("dev", 1, 0)


def test_demo_writes_images_and_captions(tmp_path):
    from PIL import Image

    from sim.demo import main

    main(
        ["--out", str(tmp_path), "--episodes", "2", "--steps", "15", "--image-size", "32", "--split", "test"]
    )
    lines = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    assert lines and {r["episode"] for r in lines} == {0, 1}
    for r in lines:
        assert np.asarray(Image.open(tmp_path / r["file"])).shape == (32, 32, 3)
        assert r["caption"].startswith("The ") and r["metadata"]["split"] == "test"

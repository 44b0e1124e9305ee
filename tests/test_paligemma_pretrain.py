"""The embedded PaliGemma base weights and their pretraining script."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict

import sim
from rls3_jax.vlm.paligemma.inputs import ImageSpec, preprocess_images
from rls3_jax.vlm.paligemma.learner import PaliGemmaLearner
from rls3_jax.vlm.paligemma.model import PaliGemmaConfig, TextConfig, VisionConfig, init_params
from rls3_jax.vlm.paligemma.pretrain import NAMING_QUESTION, naming_answer, pretrain_vision


def test_naming_answer_uses_catalogue_order():
    catalogue = list(sim.OBJECT_NAMES)
    assert naming_answer(["toaster", "yellow bowl", "blender"], catalogue) == "a blender, a yellow bowl and a toaster"
    assert naming_answer(["lamp", "cup"], catalogue) == "a cup and a lamp"


def test_shipped_base_weights_see_the_objects():
    learner = PaliGemmaLearner.create(eval_batch_size=32)
    images, metadata = sim.generate_samples("val", 32, 123, image_size=learner.image_size)
    said = learner.answer(learner.init_state(0), images, [NAMING_QUESTION] * 32)
    recall = np.mean([np.mean([o["name"] in a for o in m["objects"]]) for a, m in zip(said, metadata)])
    assert recall > 0.5, (recall, said[:3])  # chance: 3 of 9 objects, 0.33


def test_vision_stage_trains_only_the_tower_and_projector_and_lowers_its_loss():
    config = PaliGemmaConfig(
        vision=VisionConfig(image_size=16, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2),
        text=TextConfig(vocab_size=12, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=8),
        image_token_index=3,
    )
    model, params = init_params(config, 0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (16, 16, 16, 3), dtype=np.uint8)
    presence = (images[:, :8, :8, 0].mean((1, 2)) > 127)[:, None].astype(np.float32) * np.ones((1, 3), np.float32)
    pixels = jnp.asarray(preprocess_images(images, ImageSpec(16)))
    # where: the object sits in the top-left patch of the 2 x 2 token grid; how far: any standardisable value
    heat = np.broadcast_to(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (16, 3, 4))
    depth = rng.normal(0.0, 1.0, (16, 3)).astype(np.float32)
    targets = (presence, heat, depth)
    trained, losses = pretrain_vision(model, params, pixels, targets, 40, 8, 3e-3, jax.random.key(0))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    before, after = flatten_dict(params), flatten_dict(trained)
    assert before.keys() == after.keys()
    for path in before:
        changed = not np.array_equal(before[path], after[path])
        assert changed == (path[0] in ("vision_tower", "multi_modal_projector")), path


def test_procedural_rooms_are_valid_scenes_that_show_every_surface():
    import random

    from sim import augment
    from sim.env import place_objects
    from sim.render import View

    rooms = [augment.random_room(random.Random(s), s % 5) for s in range(12)]
    assert rooms[0] == augment.random_room(random.Random(0), 0)  # deterministic under the rng
    for room in rooms:
        assert 3 <= len(room.surfaces) <= 6
        for i, a in enumerate(room.surfaces):  # designated surfaces never overlap seen from above
            for b in room.surfaces[i + 1:]:
                assert (abs(a.center[0] - b.center[0]) >= a.half[0] + b.half[0]
                        or abs(a.center[2] - b.center[2]) >= a.half[1] + b.half[1]), (a, b)
        camera = View(room, 32, 32)
        for s in room.surfaces:  # the framed camera sees every surface's centre
            row, col, z = camera.project(s.center)
            assert z > 0 and 0 <= row < 32 * camera.ss and 0 <= col < 32 * camera.ss, (room.name, s)
        positions, _ = place_objects(random.Random(0), room, [0, 1, 2])
        assert len(positions) == 3


def test_pretraining_takes_the_render_and_patch_size_and_rejects_a_patch_that_does_not_tile(capsys):
    import pytest

    from rls3_jax.vlm.paligemma.learner import embedded_config
    from rls3_jax.vlm.paligemma.pretrain import main

    config = embedded_config(40, image_size=96, patch_size=8)
    assert (config.vision.image_size, config.vision.patch_size) == (96, 8)
    assert embedded_config(40).vision.image_size == 128  # the shipped base's shape stays the default
    with pytest.raises(SystemExit) as stop:
        main(["--image-size", "100", "--patch-size", "8", "--out", "/nonexistent/base.safetensors"])
    assert stop.value.code == 2
    assert "--image-size 100 is not a multiple of --patch-size 8" in capsys.readouterr().err

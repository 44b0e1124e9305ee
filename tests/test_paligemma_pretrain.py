"""The embedded PaliGemma base weights and their pretraining script."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

import sim
from rls3_jax.vlm.paligemma.inputs import ImageSpec, preprocess_images
from rls3_jax.vlm.paligemma.learner import PaliGemmaLearner
from rls3_jax.vlm.paligemma.model import (
    PaliGemmaConfig,
    TextConfig,
    VisionConfig,
    init_params,
    merge_tokens,
    unmerge_tokens,
)
from rls3_jax.vlm.paligemma.pretrain import (
    NAMING_QUESTION,
    naming_answer,
    object_centres,
    pretrain_vision,
    vision_targets,
    zoomed_batch,
)


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


def _tiny_config(image_token_merge=1):
    return PaliGemmaConfig(
        vision=VisionConfig(image_size=16, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2),
        text=TextConfig(vocab_size=12, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=8),
        image_token_index=3, image_token_merge=image_token_merge,
    )


@pytest.mark.parametrize("merge, zoom", [(1, 0.0), (2, 0.0), (2, 0.3)])
def test_vision_stage_trains_only_the_tower_and_projector_and_lowers_its_loss(merge, zoom):
    model, params = init_params(_tiny_config(merge), 0)
    assert model.config.num_image_tokens == 4 // merge**2
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (16, 16, 16, 3), dtype=np.uint8)
    presence = (images[:, :8, :8, 0].mean((1, 2)) > 127)[:, None].astype(np.float32) * np.ones((1, 3), np.float32)
    pixels = jnp.asarray(preprocess_images(images, ImageSpec(16)))
    # where: the object sits in the top-left patch of the 2 x 2 patch grid (also when the four patches are one
    # merged image token: the targets stay per patch); how far: any standardisable value
    heat = np.broadcast_to(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (16, 3, 4))
    depth = rng.normal(0.0, 1.0, (16, 3)).astype(np.float32)
    targets = (presence, heat, depth)
    centres = np.broadcast_to(np.array([0.25, 0.25], np.float32), (16, 3, 2))  # the top-left patch's centre
    trained, losses = pretrain_vision(model, params, pixels, targets, 40, 8, 3e-3, jax.random.key(0), zoom, centres)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    before, after = flatten_dict(params), flatten_dict(trained)
    assert before.keys() == after.keys()
    for path in before:
        changed = not np.array_equal(before[path], after[path])
        assert changed == (path[0] in ("vision_tower", "multi_modal_projector")), path


def test_zoomed_batches_move_the_targets_with_the_image():
    catalogue = list(sim.OBJECT_NAMES)
    images, metadata = sim.generate_samples("val", 24, 5, image_size=48)
    presence, heat, _ = vision_targets(metadata, catalogue, 6)
    centres = object_centres(metadata, catalogue)
    pixels = jnp.asarray(preprocess_images(images, ImageSpec(48)))
    # no zoom: the image and the targets of vision_targets
    same, seen, same_heat, log_f = zoomed_batch(pixels, presence, centres, jax.random.key(0), 1e-7, 6)
    np.testing.assert_allclose(same, pixels, atol=1e-3)
    np.testing.assert_allclose(same_heat, heat, atol=1e-5)
    np.testing.assert_array_equal(seen, presence)
    # a bright square at each image's first object follows it: it lands in the cell its heat map peaks at
    square = np.full((24, 3, 48, 48), -1.0, np.float32)
    first = [catalogue.index(m["objects"][0]["name"]) for m in metadata]
    for i, k in enumerate(first):
        row, col = (centres[i, k] * 48).astype(int)
        square[i, :, row - 1:row + 2, col - 1:col + 2] = 1.0
    moved, seen, moved_heat, log_f = zoomed_batch(jnp.asarray(square), presence, centres, jax.random.key(1), 0.5, 6)
    f = np.exp(np.asarray(log_f))
    assert f.min() < 0.9 and f.max() > 1.1 and f.min() >= 1 / 1.5 - 1e-6 and f.max() <= 1.5 + 1e-6
    checked = 0
    for i, k in enumerate(first):
        if seen[i, k]:
            peak = np.unravel_index(np.argmax(moved[i, 0]), (48, 48))
            cell = np.unravel_index(np.argmax(moved_heat[i, k]), (6, 6))
            assert np.abs(np.array(peak) // 8 - np.array(cell)).max() <= 1, (i, peak, cell)
            np.testing.assert_allclose(moved_heat[i, k].sum(), 1.0, rtol=1e-5)
            checked += 1
        else:  # moved out of the frame: absent, no heat
            assert moved_heat[i, k].sum() == 0
    assert checked >= 12
    assert np.all(np.asarray(seen) <= presence)
    for key in range(8):  # objects absent from the start, or zoomed far out of the frame: no heat, never NaN
        _, seen, far_heat, _ = zoomed_batch(pixels, presence, centres, jax.random.key(key), 2.0, 6)
        assert np.isfinite(far_heat).all()
        np.testing.assert_allclose(np.asarray(far_heat).sum(-1), seen, atol=1e-5)


def test_merged_image_tokens_hold_blocks_of_neighbouring_patches():
    grid = jnp.arange(36, dtype=jnp.float32).reshape(1, 36, 1) * jnp.array([1.0, -1.0])  # a 6 x 6 grid, 2 features
    merged = merge_tokens(grid, 2)
    assert merged.shape == (1, 9, 8)
    np.testing.assert_array_equal(merged[0, 0, ::2], [0, 1, 6, 7])  # the top-left 2 x 2 block, row-major
    np.testing.assert_array_equal(merged[0, 4, ::2], [14, 15, 20, 21])  # the centre block
    np.testing.assert_array_equal(unmerge_tokens(merged, 2), grid)
    assert merge_tokens(grid, 1) is grid


def test_a_base_with_merged_image_tokens_saves_loads_and_answers(tmp_path):
    from rls3_jax.vlm.paligemma.learner import embedded_config, load_base, save_base
    from rls3_jax.vlm.paligemma.tokenizer import WordTokenizer

    tokenizer = WordTokenizer.for_objects(list(sim.OBJECT_NAMES), location_tokens=True)
    config = embedded_config(len(tokenizer), image_size=32, patch_size=8, image_token_merge=2)
    assert config.num_image_tokens == 4  # a 4 x 4 patch grid in 2 x 2 blocks
    model, params = init_params(config, 0)
    assert params["multi_modal_projector"]["kernel"].shape == (4 * 128, 128)
    save_base(tmp_path / "b.safetensors", tmp_path / "b.json", params, config, tokenizer, {})
    config_, params_, tokenizer_, _ = load_base(tmp_path / "b.safetensors", tmp_path / "b.json")
    assert config_ == config
    learner = PaliGemmaLearner.from_parts(config_, params_, tokenizer_)
    images, _ = sim.generate_samples("val", 2, 0, image_size=32)
    assert len(learner.answer(learner.init_state(0), images, [NAMING_QUESTION] * 2)) == 2


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
    from rls3_jax.vlm.paligemma.learner import embedded_config
    from rls3_jax.vlm.paligemma.pretrain import main

    config = embedded_config(40, image_size=96, patch_size=8)
    assert (config.vision.image_size, config.vision.patch_size) == (96, 8)
    default = embedded_config(40)  # the shipped base's shape stays the default
    assert (default.vision.image_size, default.vision.patch_size, default.num_image_tokens) == (96, 8, 36)
    assert (default.vision.num_hidden_layers, embedded_config(40, vision_layers=3).vision.num_hidden_layers) == (6, 3)
    with pytest.raises(SystemExit) as stop:
        main(["--image-size", "100", "--patch-size", "8", "--out", "/nonexistent/base.safetensors"])
    assert stop.value.code == 2
    assert "--image-size 100 is not a multiple of --patch-size 8" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["--image-size", "96", "--patch-size", "8", "--image-token-merge", "5", "--out", "/nonexistent/b.safetensors"])
    assert stop.value.code == 2
    assert "--image-token-merge 5 does not divide the 12-patch side" in capsys.readouterr().err
    for flag, value in (("--per-variant", "0"), ("--zoom", "-0.5"), ("--vision-layers", "0")):
        with pytest.raises(SystemExit) as stop:
            main([flag, value, "--out", "/nonexistent/b.safetensors"])
        assert stop.value.code == 2
        assert "--per-variant and --vision-layers must be >= 1 and --zoom >= 0" in capsys.readouterr().err


def test_location_embeddings_span_only_the_frequencies_asked_for():
    from rls3_jax.vlm.paligemma import detection
    from rls3_jax.vlm.paligemma.learner import embedded_config
    from rls3_jax.vlm.paligemma.pretrain import smooth_location_embeddings
    from rls3_jax.vlm.paligemma.tokenizer import WordTokenizer

    tokenizer = WordTokenizer.for_objects(sim.OBJECT_NAMES, location_tokens=True)
    _, params = init_params(embedded_config(len(tokenizer)), 0)
    first = tokenizer.ids[detection.LOC_TOKENS[0]]
    ranks = {}
    for frequencies in (2, 16):
        table = smooth_location_embeddings(params, tokenizer, 0, frequencies)["language_model"]["embed_tokens"]["embedding"]
        loc = np.asarray(table)[first:first + detection.LOC_BINS]
        ranks[frequencies] = np.linalg.matrix_rank(loc.astype(np.float64), tol=1e-3 * np.abs(loc).max())
        assert np.abs(np.diff(loc, axis=0)).max() < 0.1 * np.abs(loc).max()  # neighbouring bins stay close
        np.testing.assert_array_equal(np.asarray(table)[:first], np.asarray(params["language_model"]["embed_tokens"]["embedding"])[:first])
    assert ranks[2] == 4 and ranks[16] > 16, ranks  # a sine and a cosine per frequency


def test_stage_one_taken_from_a_base_file_copies_its_vision_tower(tmp_path):
    from rls3_jax.vlm.paligemma.learner import embedded_config, save_base
    from rls3_jax.vlm.paligemma.pretrain import _stage1_from
    from rls3_jax.vlm.paligemma.tokenizer import WordTokenizer

    tokenizer = WordTokenizer.for_objects(sim.OBJECT_NAMES, location_tokens=True)
    config = embedded_config(len(tokenizer), image_size=128, patch_size=16, image_token_merge=1)
    _, base = init_params(config, 1)
    path = tmp_path / "base.safetensors"
    save_base(path, path.with_suffix(".json"), base, config, tokenizer, {"vision_steps": 7, "vision_final_loss": 1.5})
    _, fresh = init_params(config, 2)
    params, info = _stage1_from(path, config, fresh)
    assert info == {"vision_from": str(path), "vision_steps": 7, "vision_final_loss": 1.5}
    for a, b in zip(jax.tree.leaves(params["vision_tower"]), jax.tree.leaves(base["vision_tower"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for part in ("multi_modal_projector", "language_model"):  # this run's own init
        for a, b in zip(jax.tree.leaves(params[part]), jax.tree.leaves(fresh[part])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="base.safetensors: its vision tower"):
        _stage1_from(path, embedded_config(len(tokenizer), image_size=96, patch_size=8, image_token_merge=1), fresh)


def test_frozen_location_embeddings_stay_while_the_rest_of_the_language_model_trains():
    from rls3_jax.vlm.paligemma import detection
    from rls3_jax.vlm.paligemma.inputs import WordPrompts
    from rls3_jax.vlm.paligemma.pretrain import pretrain_language, smooth_location_embeddings
    from rls3_jax.vlm.paligemma.tokenizer import WordTokenizer

    tokenizer = WordTokenizer.for_objects(sim.OBJECT_NAMES, location_tokens=True)
    config = PaliGemmaConfig(
        vision=VisionConfig(image_size=16, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2),
        text=TextConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=8),
        image_token_index=tokenizer.image_id,
    )
    model, params = init_params(config, 0)
    params = smooth_location_embeddings(params, tokenizer, 0, 2)
    pixels = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32))
    examples = [(0, "detect cup", "<loc0100><loc0200><loc0300><loc0400> cup"), (1, "detect plate", "<loc0500><loc0600><loc0700><loc0800> plate")]
    first = tokenizer.ids[detection.LOC_TOKENS[0]]
    rows = slice(first, first + detection.LOC_BINS)
    table = lambda p: np.asarray(p["language_model"]["embed_tokens"]["embedding"])
    for frozen in (True, False):
        trained, _ = pretrain_language(model, params, pixels, examples, WordPrompts(tokenizer), 3, 2, 1e-2,
                                       jax.random.key(0), 12.0, frozen_locations=frozen)
        assert np.array_equal(table(trained)[rows], table(params)[rows]) == frozen
        assert not np.array_equal(table(trained)[:first], table(params)[:first])  # the words' embeddings train


def test_stage_one_saved_alone_is_what_a_later_run_starts_from(tmp_path, capsys):
    from rls3_jax.vlm.paligemma.learner import load_base
    from rls3_jax.vlm.paligemma.pretrain import _stage1_from, main, pretrain

    path = tmp_path / "stage1.safetensors"
    config, params, _, _ = pretrain(seed=0, n_train=8, vision_steps=2, vision_batch_size=2, steps=2, batch_size=2,
                                    image_size=32, patch_size=8, image_token_merge=2, vision_out=path)
    saved_config, saved, _, info = load_base(path, path.with_suffix(".json"))
    assert saved_config == config and info["stage"] == "vision only" and info["vision_steps"] == 2
    _, fresh = init_params(config, 5)
    taken, _ = _stage1_from(path, config, fresh)
    for part in ("vision_tower", "multi_modal_projector"):  # merged tokens: the later run takes both
        for b, c in zip(jax.tree.leaves(saved[part]), jax.tree.leaves(taken[part])):
            np.testing.assert_array_equal(np.asarray(b), np.asarray(c))
    for a, b in zip(jax.tree.leaves(params["vision_tower"]), jax.tree.leaves(saved["vision_tower"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # stage 2 leaves the tower as stage 1 made it
    # Stage 2 computes the image tokens once, so only AdamW's weight decay moves the projector.
    np.testing.assert_allclose(params["multi_modal_projector"]["kernel"], saved["multi_modal_projector"]["kernel"], rtol=1e-4)
    with pytest.raises(SystemExit) as stop:
        main(["--vision-from", str(path), "--vision-out", str(tmp_path / "x.safetensors"), "--out", str(tmp_path / "y")])
    assert stop.value.code == 2 and "--vision-out saves stage 1, which --vision-from skips" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()

"""The PaliGemma learner contract on the embedded default: evaluation, attention-only fine-tuning, learning."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

import sim
from rls3_jax import checkpoint
from rls3_jax.prompts import describe_pair
from rls3_jax.scoring import rubric_score
from rls3_jax.vlm.paligemma import detection
from rls3_jax.vlm.paligemma.inputs import ImageSpec, normalise, preprocess_images
from rls3_jax.vlm.paligemma.learner import PaliGemmaLearner
from rls3_jax.vlm.paligemma.tokenizer import WordTokenizer


@pytest.fixture(scope="module")
def learner():
    return PaliGemmaLearner.create(train_batch_size=16, eval_batch_size=32)


def _samples(split, n, seed, size):
    images, metadata = sim.generate_samples(split, n, seed, image_size=size)
    return images, [describe_pair(m, 0, 1) for m in metadata]


@pytest.fixture(scope="module")
def data(learner):
    return _samples("train", 128, 0, learner.image_size), _samples("test", 48, 1, learner.image_size)


def test_short_finetune_raises_the_held_out_rubric_score(learner, data):
    (train_images, train), (test_images, test) = data
    state = learner.init_state(0)
    before = learner.evaluate(state, test_images, test)
    state, losses = learner.finetune(state, train_images, train, 80, jax.random.key(0))
    after = learner.evaluate(state, test_images, test)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    assert after["loss"] < before["loss"]
    assert after["metric"] >= before["metric"] + 0.6, (before["metric"], after["metric"], after["answers"][:3])
    assert int(state["step"]) == 80


def test_evaluate_follows_the_contract(learner, data):
    _, (images, samples) = data
    state = learner.init_state(0)
    n = 40  # not a multiple of the evaluation batch: the last batch is padded
    result = learner.evaluate(state, images[:n], samples[:n])
    scores = result["per_sample_metric"]
    assert scores.shape == (n,) and set(np.unique(scores)) <= {1, 2, 3, 4, 5}
    assert result["metric"] == pytest.approx(scores.mean())
    assert result["reward"] == pytest.approx((6 - scores.mean()) ** 2)
    np.testing.assert_allclose(result["per_sample_reward"], (6 - scores) ** 2)
    assert len(result["answers"]) == n and all(isinstance(a, str) for a in result["answers"])
    assert np.isfinite(result["loss"]) and result["loss"] > 0
    for term, value in result["per_term"].items():
        sel = [i for i, s in enumerate(samples[:n]) if term in s["terms"]]
        assert value == pytest.approx(scores[sel].mean())
    assert set(result["per_complexity"]) <= {1, 2, 3}
    assert learner.name == "paligemma" and images.shape[1] == learner.image_size
    compiled = learner.decoder._cache_size()
    learner.evaluate(state, images[:33], samples[:33])  # another size, same buckets: no recompilation
    assert learner.decoder._cache_size() == compiled


def test_only_attention_is_trained_and_frozen_parts_have_no_optimiser_state(learner, data):
    (images, samples), _ = data
    state = learner.init_state(0)
    trained, _ = learner.finetune(state, images, samples, 2, jax.random.key(1))
    before, after = flatten_dict(state["params"]), flatten_dict(trained["params"])
    for path in before:
        changed = not np.array_equal(before[path], after[path])
        assert changed == (path[0] == "language_model" and "self_attn" in path), path
    attention = sum(v.size for p, v in before.items() if path_is_attention(p))
    moments = sum(x.size for x in jax.tree.leaves(state["opt"]) if x.ndim > 0)
    assert moments == 2 * attention  # Adam's two moments for the attention weights only


def path_is_attention(path):
    return path[0] == "language_model" and "self_attn" in path


def test_full_finetuning_switch_trains_everything(data):
    (images, samples), _ = data
    learner = PaliGemmaLearner.create(full_finetune=True, train_batch_size=4)
    state = learner.init_state(0)
    trained, _ = learner.finetune(state, images[:8], samples[:8], 1, jax.random.key(0))
    before, after = flatten_dict(state["params"]), flatten_dict(trained["params"])
    assert all(not np.array_equal(before[p], after[p]) for p in before if "vision_tower" in p)


def test_finetune_is_reproducible_and_checkpointable(learner, data, tmp_path):
    (images, samples), _ = data
    a, losses_a = learner.finetune(learner.init_state(0), images, samples, 3, jax.random.key(5))
    b, losses_b = learner.finetune(learner.init_state(0), images, samples, 3, jax.random.key(5))
    assert losses_a == losses_b
    checkpoint.save(tmp_path / "ckpt", a)
    loaded, _ = checkpoint.load(tmp_path / "ckpt")
    restored = checkpoint.restore_like(learner.init_state(0), loaded)
    for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_nan_loss_raises(learner, data):
    (images, samples), _ = data
    state = learner.init_state(0)
    state["params"] = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), state["params"])
    with pytest.raises(FloatingPointError, match="loss became nan"):
        learner.finetune(state, images[:4], samples[:4], 1, jax.random.key(0))


def test_word_tokenizer_round_trip_and_unknown_words():
    tok = WordTokenizer.for_objects(sim.OBJECT_NAMES)
    caption = "the small pot is above, behind and to the left of the yellow bowl."
    assert tok.decode(tok.encode(caption)) == caption
    assert tok.decode(tok.encode("What is the position of the cup relative to the lamp?")) == (
        "what is the position of the cup relative to the lamp?"
    )
    with pytest.raises(ValueError, match="'giraffe'.*closed vocabulary"):
        tok.encode("the giraffe is left of the cup.")
    assert WordTokenizer.from_json(tok.to_json()).vocab == tok.vocab


def test_cached_image_tokens_give_the_uncached_losses_and_parameters(learner, data):
    """Attention-only fine-tuning runs the frozen vision tower once per set: same losses and weights as
    running it in every step, and the frozen parameters stay bit for bit what they were."""
    (train_images, train), _ = data
    uncached = dataclasses.replace(learner, cache_image_features=False)
    assert learner.cache_image_features
    images, samples = train_images[:40], train[:40]  # not a multiple of eval_batch_size: a padded chunk
    key = jax.random.key(3)
    state_c, losses_c = learner.finetune(learner.init_state(0), images, samples, 6, key)
    state_u, losses_u = uncached.finetune(uncached.init_state(0), images, samples, 6, key)
    np.testing.assert_allclose(losses_c, losses_u, rtol=2e-5, atol=1e-6)
    flat_c, flat_u = flatten_dict(state_c["params"]), flatten_dict(state_u["params"])
    base = flatten_dict(learner.base_params)
    moved = [p for p in flat_c if not np.array_equal(np.asarray(flat_c[p]), np.asarray(base[p]))]
    assert moved and all(p[0] == "language_model" and "self_attn" in p for p in moved)
    # Adam divides by the gradient's own scale, so a float-level difference in a gradient near zero can move that
    # one weight by up to a step (the learning rate, 2e-3); a cache that fed other tokens would move nearly all.
    for path in flat_c:
        cached, uncached = np.asarray(flat_c[path]), np.asarray(flat_u[path])
        close = np.isclose(cached, uncached, rtol=1e-4, atol=1e-6)
        assert close.mean() > 0.999, (path, int((~close).sum()))
        assert np.abs(cached - uncached).max() <= 6 * 2e-3, path  # never more than the 6 steps could move it


def test_image_tokens_encoded_once_serve_later_calls_and_every_state(learner, data):
    """`encode_images` is what a later fine-tuning call computes itself: passed in as `encoded`, the losses and
    weights are the same bit for bit, and a fine-tuned state encodes the images as the first one did (the
    tower is frozen). A learner whose tower trains has no such encoding; a wrong-sized one is refused."""
    (train_images, train), _ = data
    images, samples = train_images[:40], train[:40]
    key = jax.random.key(5)
    start = learner.init_state(0)
    encoded = learner.encode_images(start, images)
    assert encoded.shape == (40, learner.config.num_image_tokens, learner.config.text.hidden_size)
    state_a, losses_a = learner.finetune(start, images, samples, 4, key)
    state_b, losses_b = learner.finetune(start, images, samples, 4, key, encoded=encoded)
    assert losses_a == losses_b
    jax.tree.map(np.testing.assert_array_equal, state_a["params"], state_b["params"])
    np.testing.assert_array_equal(np.asarray(learner.encode_images(state_a, images)), np.asarray(encoded))
    with pytest.raises(ValueError, match="shape .40, .* for 39 samples"):
        learner.finetune(start, images[:39], samples[:39], 1, key, encoded=encoded)
    assert dataclasses.replace(learner, cache_image_features=False).encode_images(start, images) is None


def test_photometric_jitter_is_fixed_per_image_and_the_same_cached_or_not(learner, data):
    """`photometric` jitters what fine-tuning sees: each image the same way wherever it stands in a set (seeded
    by its pixels), in the cached and the uncached path alike; evaluation sees the images as they are."""
    (train_images, train), _ = data
    images, samples = train_images[:24], train[:24]
    jittered = dataclasses.replace(learner, photometric=1.0)
    seen = jittered.training_images(images)
    assert seen.shape == images.shape and seen.dtype == np.uint8
    assert all(not np.array_equal(a, b) for a, b in zip(seen, images))
    np.testing.assert_array_equal(jittered.training_images(images[::-1]), seen[::-1])
    np.testing.assert_array_equal(learner.training_images(images), images)  # photometric 0: as they are
    key = jax.random.key(4)
    state_c, losses_c = jittered.finetune(jittered.init_state(0), images, samples, 4, key)
    uncached = dataclasses.replace(jittered, cache_image_features=False)
    state_u, losses_u = uncached.finetune(uncached.init_state(0), images, samples, 4, key)
    np.testing.assert_allclose(losses_c, losses_u, rtol=2e-5, atol=1e-6)
    _, losses_plain = learner.finetune(learner.init_state(0), images, samples, 4, key)
    assert not np.allclose(losses_c, losses_plain, rtol=1e-4)
    questions, answers = [s["question"] for s in samples], [learner.target(s) for s in samples]
    np.testing.assert_array_equal(jittered.answer_nll(state_c, images, questions, answers),
                                  learner.answer_nll(state_c, images, questions, answers))


def test_images_normalised_on_the_device_match_the_processor_layout():
    """The learner sends uint8 images and normalises them inside jit: the same floats as the host path
    (the processor's layout), for the embedded spec and a checkpoint's own mean and std."""
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    for spec in (ImageSpec(8), ImageSpec(8, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28))):
        on_device = jax.jit(lambda x, spec=spec: normalise(x, spec))(images)
        assert on_device.shape == (3, 3, 8, 8) and on_device.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(on_device), preprocess_images(images, spec), rtol=1e-6, atol=1e-6)
    assert not np.allclose(preprocess_images(images, ImageSpec(8)), images.transpose(0, 3, 1, 2) / 255)


def _with_metadata(split, n, seed, size):
    images, metadata = sim.generate_samples(split, n, seed, image_size=size)
    return images, [dict(describe_pair(m, 0, 1), metadata=m) for m in metadata]


def test_grounded_answer_holds_both_boxes_then_the_caption_and_scores_as_it():
    _, (sample,) = _with_metadata("test", 1, 3, 32)
    text = detection.grounded_answer(sample)
    boxes, second, caption = text.split(" ; ")
    assert caption == sample["caption"]
    md = sample["metadata"]
    assert boxes == detection.detect_answer(md, 0) and second == detection.detect_answer(md, 1)
    assert boxes.endswith(sample["located"]) and second.endswith(sample["reference"])
    assert rubric_score(sample["terms"], text) == 5  # location tokens and names state no spatial term
    with pytest.raises(ValueError, match="needs the sample's metadata"):
        detection.grounded_answer({k: v for k, v in sample.items() if k != "metadata"})


def test_grounded_learner_trains_on_and_answers_with_the_boxes(learner):
    grounded = PaliGemmaLearner.create(train_batch_size=16, eval_batch_size=32, grounded=True)
    assert grounded.max_new_tokens >= 40 and not learner.grounded
    images, samples = _with_metadata("train", 48, 4, grounded.image_size)
    assert grounded.target(samples[0]) == detection.grounded_answer(samples[0])
    assert learner.target(samples[0]) == samples[0]["caption"]
    state, losses = grounded.finetune(grounded.init_state(0), images, samples, 40, jax.random.key(0))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3])
    answers = grounded.evaluate(state, images[:8], samples[:8])["answers"]
    assert all(detection.parse_box(a) is not None for a in answers), answers[:2]
    assert sum(" is " in a for a in answers) >= 6, answers[:2]  # the caption follows the boxes

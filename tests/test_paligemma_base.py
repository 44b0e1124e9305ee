"""The embedded PaliGemma's base: detection in PaliGemma's format, and what the shipped weights know."""

from __future__ import annotations

import numpy as np
import pytest

import sim
from rls3_jax.prompts import describe_pair
from rls3_jax.vlm.paligemma import detection
from rls3_jax.vlm.paligemma.learner import PaliGemmaLearner
from rls3_jax.vlm.paligemma.pretrain import NAMING_QUESTION, language_examples, object_pairs
from rls3_jax.vlm.paligemma.tokenizer import WordTokenizer
from sim.render import view


def test_object_box_covers_the_rendered_object():
    images, metadata = sim.generate_samples("train", 6, 3, image_size=128)
    for m in metadata:
        scene = sim.SCENES[m["scene"]]
        for k, obj in enumerate(m["objects"]):
            alone = view(scene, 128, 128).render([(sim.OBJECT_NAMES.index(obj["name"]), obj["position"])])
            empty = view(scene, 128, 128).render([])
            rows, cols = np.nonzero(np.abs(alone.astype(int) - empty.astype(int)).sum(-1) > 30)
            if len(rows) < 4:  # hidden behind furniture from this camera
                continue
            y0, x0, y1, x1 = detection.object_box(m, k) * 128
            # The projected bounding box holds the object's pixels (its contact shadow may reach a little past).
            assert y0 - 3 <= rows.min() and rows.max() <= y1 + 3, (obj["name"], y0, y1, rows.min(), rows.max())
            assert x0 - 3 <= cols.min() and cols.max() <= x1 + 3, (obj["name"], x0, x1, cols.min(), cols.max())
            assert (y1 - y0) < 2.5 * (rows.max() - rows.min() + 4)  # and is not much larger than it


def test_detect_answer_round_trips_through_the_tokenizer():
    _, metadata = sim.generate_samples("test", 3, 0, image_size=16)
    tok = WordTokenizer.for_objects(sim.OBJECT_NAMES, location_tokens=True)
    for m in metadata:
        for k, obj in enumerate(m["objects"]):
            answer = detection.detect_answer(m, k)
            assert answer.endswith(" " + obj["name"]) and answer.count("<loc") == 4
            assert tok.decode(tok.encode(answer)) == answer
            np.testing.assert_allclose(detection.parse_box(answer), detection.object_box(m, k), atol=1 / 1024)
    assert detection.parse_box("the cup is to the left of the plate.") is None
    assert detection.iou(np.array([0, 0, 0.5, 0.5]), np.array([0, 0, 0.5, 1.0])) == pytest.approx(0.5)


def test_pretraining_answers_hold_no_spatial_word():
    _, metadata = sim.generate_samples("train", 20, 1, image_size=16)
    examples = language_examples(metadata, list(sim.OBJECT_NAMES), 0)
    assert {q for _, q, _ in examples} >= {NAMING_QUESTION}
    spatial = {"above", "below", "behind", "front", "left", "right"}
    for _, question, answer in examples:
        assert not spatial & set(question.lower().replace(";", " ").split()), question
        assert not spatial & set(answer.lower().replace(";", " ").replace(",", " ").split()), answer


def test_two_object_detections_draw_distinct_ordered_pairs_with_boxes_in_the_order_asked():
    _, metadata = sim.generate_samples("train", 8, 2, image_size=16)
    for count in (1, 3, 6):
        pairs = object_pairs(3, count, np.random.default_rng(count))
        assert len(pairs) == len(set(pairs)) == count and all(a != b for a, b in pairs)
        examples = language_examples(metadata, list(sim.OBJECT_NAMES), 0, pairs_per_image=count)
        two = [(i, q, a) for i, q, a in examples if ";" in q]
        assert len(two) == count * len(metadata) and len(examples) == (4 + count) * len(metadata)
        for i, question, answer in two:
            names = question.removeprefix("detect ").split(" ; ")
            index = {o["name"]: k for k, o in enumerate(metadata[i]["objects"])}
            assert answer == " ; ".join(detection.detect_answer(metadata[i], index[n]) for n in names)
    assert set(object_pairs(3, 6, np.random.default_rng(0))) == {(a, b) for a in range(3) for b in range(3) if a != b}


@pytest.fixture(scope="module")
def base():
    learner = PaliGemmaLearner.create(eval_batch_size=32)
    return learner, learner.init_state(0)


def test_shipped_base_detects_the_objects_of_the_training_rooms(base):
    from rls3_jax.vlm.paligemma.pretrain import detection_scores, pair_detection_scores

    learner, state = base
    images, metadata = sim.generate_samples("val", 16, 11, image_size=learner.image_size)
    scores = detection_scores(learner, state, images, metadata)
    assert scores["centre_error"] < 0.12 and scores["mean_iou"] > 0.15, scores
    # two objects at once, boxes in the order asked (the form a grounded answer states its boxes in)
    assert pair_detection_scores(learner, state, images, metadata)["pair_mean_iou"] > 0.15
    said = learner.answer(state, images, [NAMING_QUESTION] * len(images))
    recall = np.mean([np.mean([o["name"] in a for o in m["objects"]]) for a, m in zip(said, metadata)])
    assert recall > 0.6  # chance: 3 of 9 objects


def test_shipped_base_scores_the_floor_on_spatial_questions(base):
    learner, state = base
    images, metadata = sim.generate_samples("test", 32, 12, image_size=learner.image_size)
    result = learner.evaluate(state, images, [describe_pair(m, 0, 1) for m in metadata])
    assert result["metric"] <= 1.5, result["answers"][:3]

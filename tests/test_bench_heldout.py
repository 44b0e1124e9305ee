"""bench/paligemma_heldout.py's diagnostic decoder: answers continued from a given start."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sim
from rls3_jax.prompts import describe_pair
from rls3_jax.vlm.paligemma.learner import PaliGemmaLearner

_PATH = Path(__file__).resolve().parents[1] / "bench" / "paligemma_heldout.py"
_spec = importlib.util.spec_from_file_location("paligemma_heldout", _PATH)
heldout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(heldout)


def test_continued_answers_match_the_cached_decoder_and_follow_the_given_start():
    learner = PaliGemmaLearner.create(eval_batch_size=8, grounded=True)
    images, metadata = sim.generate_samples("test", 6, 5, image_size=learner.image_size)
    samples = [dict(describe_pair(m, 0, 1), metadata=m) for m in metadata]
    questions = [s["question"] for s in samples]
    state = learner.init_state(0)
    cached = learner.answer(state, images, questions)
    uncached = heldout.continue_answers(learner, state["params"], images, questions, [""] * 6,
                                        max_new=learner.max_new_tokens)
    assert uncached == cached
    starts = [heldout.true_boxes(s) for s in samples]
    assert starts[0].endswith(f"{samples[0]['reference']} ;") and starts[0].count("<loc") == 8
    # Continued from the first tokens of the model's own answers, it writes the rest of those answers.
    encode, decode = learner.prompts.tokenizer.encode, learner.prompts.decode
    heads = [decode(encode(a)[:3]) for a in cached]
    rest = heldout.continue_answers(learner, state["params"], images, questions, heads, max_new=learner.max_new_tokens)
    assert [encode(h) + encode(r) for h, r in zip(heads, rest)] == [encode(a) for a in cached]
    assert any(len(encode(a)) > 3 for a in cached), cached

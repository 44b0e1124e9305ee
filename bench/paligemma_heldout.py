"""Direct fine-tune of the embedded PaliGemma on spatial questions, outside the loop.

N training-room renders with one random object pair each; every --eval-every steps the mean rubric on 128 val
renders (training rooms) and 128 test renders (unseen rooms), beside the best consistent image-blind answer of
each set (rls3_jax.blind). One JSON line per evaluation. `--grounded`: answers with both objects' boxes before
the caption (rls3_jax.vlm.paligemma.detection.grounded_answer), and each line adds the mean IoU of the boxes the
answers state; `--true-boxes` (with `--grounded`) adds the score of the caption the model writes when its answer
starts with the true boxes (what its relation step reads from perfect boxes); `--mirror`: the training set plus
its mirror image (rls3_jax.mirror); `--photometric S`: fine-tune on the training images under the learner's fixed
photometric jitter of strength S (measured, not used by the loop: docs/paligemma.md).

    PYTHONPATH=. python bench/paligemma_heldout.py --n 3000 --steps 1500 --eval-every 500 --lr 2e-3 [--grounded]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import jax
import numpy as np

import sim
from rls3_jax import blind, mirror
from rls3_jax.prompts import describe_pair
from rls3_jax.scoring import rubric_score
from rls3_jax.vlm.paligemma import detection
from rls3_jax.vlm.paligemma import learner as paligemma_learner
from rls3_jax.vlm.paligemma.inputs import preprocess_images


def samples(split: str, n: int, seed: int, image_size: int):
    images, metadata = sim.generate_samples(split, n, seed, image_size=image_size)
    rng = random.Random(seed)
    return images, [dict(describe_pair(m, *rng.sample(range(3), 2)), metadata=m) for m in metadata]


def answer_box_iou(answers, samples) -> float:
    """Mean IoU of the two boxes a grounded answer states against the true ones (0 for a missing box)."""
    ious = []
    for answer, s in zip(answers, samples):
        parts = answer.split(" ; ")
        index = {o["name"]: i for i, o in enumerate(s["metadata"]["objects"])}
        for k, role in enumerate(("located", "reference")):
            box = detection.parse_box(parts[k]) if k < len(parts) else None
            truth = detection.object_box(s["metadata"], index[s[role]])
            ious.append(detection.iou(box, truth) if box is not None else 0.0)
    return float(sum(ious) / len(ious))


def true_boxes(sample: dict) -> str:
    """The start of the sample's grounded answer: both true boxes and names, up to the caption."""
    return detection.grounded_answer(sample).rsplit(" ; ", 1)[0] + " ;"


def continue_answers(learner, params, images, questions, starts, max_new: int = 24) -> list[str]:
    """Greedy continuations of answers whose first tokens are given (teacher-forced, answer tokens causal as in
    training): a full forward pass per new token, no cache; a diagnostic, not the learner's decoder."""
    prompts, n_img = learner.prompts, learner.config.num_image_tokens
    rows = [[prompts.image_id] * n_img + prompts.prefix(q) for q in questions]
    answer_from = [len(r) for r in rows]
    rows = [r + prompts.suffix(a)[:-1] for r, a in zip(rows, starts)]  # without the EOS
    length = max(len(r) for r in rows) + max_new
    forward = jax.jit(lambda p, ids, pixels, mask, types: learner.model.apply(
        {"params": p}, input_ids=ids, pixel_values=pixels, attention_mask=mask, token_type_ids=types)["logits"])
    pixels = preprocess_images(np.asarray(images), learner.image_spec)
    new, done = [[] for _ in rows], np.zeros(len(rows), bool)
    for _ in range(max_new):
        ids, mask = np.zeros((len(rows), length), np.int32), np.zeros((len(rows), length), np.int32)
        types = np.ones_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)], types[i, : answer_from[i]] = r, 1, 0
        logits = np.asarray(forward(params, ids, pixels, mask, types))
        for i, r in enumerate(rows):
            token = int(np.argmax(logits[i, len(r) - 1 - (length - logits.shape[1])]))
            done[i] |= token == prompts.eos_id
            if not done[i]:
                r.append(token)
                new[i].append(token)
        if done.all():
            break
    return [prompts.decode(t) for t in new]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=paligemma_learner.BASE_WEIGHTS)
    parser.add_argument("--n", type=int, default=400, help="training-room renders to fine-tune on")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--full", action="store_true", help="fine-tune everything, not only Gemma's attention")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mirror", action="store_true", help="add every image's mirror image (left/right swapped)")
    parser.add_argument("--photometric", type=float, default=0.0,
                        help="strength of the fixed photometric jitter of the fine-tuning images (0: none)")
    parser.add_argument("--grounded", action="store_true", help="answer with both objects' boxes, then the caption")
    parser.add_argument("--true-boxes", action="store_true",
                        help="with --grounded: also score the caption the model writes after the TRUE boxes")
    args = parser.parse_args()
    config, params, tokenizer, _ = paligemma_learner.load_base(args.base, args.base.with_suffix(".json"))
    learner = paligemma_learner.PaliGemmaLearner.from_parts(
        config, params, tokenizer, full_finetune=args.full, learning_rate=args.lr, train_batch_size=args.batch,
        grounded=args.grounded, photometric=args.photometric)
    train = samples("train", args.n, 100 + args.seed, learner.image_size)
    if args.mirror:
        train = mirror.with_mirrors(*train)
    sets = {"val": samples("val", 128, 7, learner.image_size), "test": samples("test", 128, 8, learner.image_size)}
    floor = {name: blind.paligemma_blind(s)["consistent_metric"] for name, (_, s) in sets.items()}
    state, key, done, start = learner.init_state(0), jax.random.key(args.seed), 0, time.time()
    while True:
        line = {"step": done, "n": args.n, "lr": args.lr, "full": args.full, "mirror": args.mirror,
                "photometric": args.photometric,
                "grounded": args.grounded, "seconds": round(time.time() - start)}
        for name, (images, s) in sets.items():
            result = learner.evaluate(state, images, s)
            line[name] = round(result["metric"], 3)
            line[f"{name}_blind_consistent"] = round(floor[name], 3)
            line[f"{name}_per_term"] = {t: round(v, 2) for t, v in result["per_term"].items()}
            if args.grounded:
                line[f"{name}_answer_box_iou"] = round(answer_box_iou(result["answers"], s), 3)
            if args.grounded and args.true_boxes:
                starts = [true_boxes(x) for x in s]
                after = continue_answers(learner, state["params"], images, [x["question"] for x in s], starts)
                scores = [rubric_score(x["terms"], a) for x, a in zip(s, after)]
                line[f"{name}_after_true_boxes"] = round(float(np.mean(scores)), 3)
        print(json.dumps(line), flush=True)
        if done >= args.steps:
            break
        key, sub = jax.random.split(key)
        state, _ = learner.finetune(state, *train, args.eval_every, sub)
        done += args.eval_every


if __name__ == "__main__":
    main()

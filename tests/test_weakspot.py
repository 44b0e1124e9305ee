"""The scripted weak-spot VLM: it fails exactly on its weak terms, masters them after N samples, runs in the loop."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rls3_jax.vlm.weakspot import WeakSpotLearner, parse_weak_terms


def _sample(*terms):
    return {"terms": tuple(terms), "question": "q", "caption": "c"}


SAMPLES = [_sample("above", "left"), _sample("left"), _sample("below", "behind", "right"), _sample("in front")]


def test_parse_weak_terms():
    assert parse_weak_terms("above, below") == ("above", "below")
    assert parse_weak_terms("in front") == ("in front",)
    for bad, match in (("up", "'up' is not one of"), ("", "names no term"), ("left,left", "twice")):
        with pytest.raises(ValueError, match=match):
            parse_weak_terms(bad)


def test_fails_exactly_on_weak_term_samples():
    learner = WeakSpotLearner(("above", "below"))
    result = learner.evaluate(learner.init_state(0), None, SAMPLES)
    np.testing.assert_array_equal(result["per_sample_metric"], [1, 5, 1, 5])
    assert result["metric"] == 3.0 and result["reward"] == pytest.approx(9.0)
    np.testing.assert_array_equal(result["per_sample_reward"], [25, 1, 25, 1])
    assert result["per_term"] == {"above": 1.0, "below": 1.0, "behind": 1.0, "in front": 5.0, "left": 3.0, "right": 1.0}
    assert result["per_complexity"] == {1: 5.0, 2: 1.0, 3: 1.0}
    assert result["loss"] == 0.5


def test_never_learns_by_default_and_masters_after_n_samples_when_asked():
    stubborn = WeakSpotLearner(("above",), learns=0, steps_per_batch=4)
    state = stubborn.init_state(0)
    for _ in range(5):
        state, _ = stubborn.finetune(state, None, SAMPLES, 4, None)
    assert stubborn.evaluate(state, None, SAMPLES)["metric"] == 4.0

    learner = WeakSpotLearner(("above", "below"), learns=2, steps_per_batch=4)
    state = learner.init_state(0)
    # The loop fine-tunes one batch in chunks of F steps that add up to K: the batch counts once.
    for chunk in (2, 2):
        state, losses = learner.finetune(state, None, SAMPLES, chunk, None)
        assert len(losses) == chunk
    assert learner.weak_now(state) == {"above", "below"}  # one sample of each seen so far
    state, _ = learner.finetune(state, None, [_sample("above")], 4, None)
    assert learner.weak_now(state) == {"below"}
    assert learner.evaluate(state, None, SAMPLES)["metric"] == 4.0
    assert learner.place(state)["seen"].dtype == np.float64


def _main(*args, tmp_path):
    return subprocess.run([sys.executable, "-m", "rls3_jax.main", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)


def test_bad_weak_terms_stop_with_a_one_line_error(tmp_path):
    done = _main("--vlm", "weakspot", "--weak-terms", "above,sideways", "--out", str(tmp_path / "run"),
                 tmp_path=tmp_path)
    assert done.returncode == 2
    assert "sideways" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_loop_with_the_weakspot_vlm_records_the_usual_keys(tmp_path):
    out = tmp_path / "ws"
    done = _main("--vlm", "weakspot", "--weak-terms", "left", "--preset", "smoke", "--out", str(out),
                 tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) >= 2 and records[0]["test_blind_metric"] >= 3.0
    per_term = records[-1]["test_per_term"]
    assert per_term.get("left", 1.0) == 1.0 and per_term.get("right", 5.0) == 5.0  # "left" and "right" never meet
    last = records[-1]
    assert sum(last["finetune_term_counts"].values()) > 0 and last["vlm_training_s"] >= 0


def _weak_share(out) -> float:
    """Share of weak-term samples in a run's fine-tuning data: the scripted VLM's loss is the batch's share."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return float(np.mean([r["train_loss"] for r in records[1:]]))


def test_sac_generates_more_of_the_weak_term_than_random(tmp_path):
    # A smaller bench_weakspot run with the changes that make SAC seek the weak spot (docs/sac.md): a surface and
    # a point to come nearest, the moved object described against the next one (which the agent sees), each
    # sample's own reward, a replay buffer without the pretraining's transitions, learning rate 1e-3 (the default
    # preset's agent side, with one gradient step, SAC's own entropy target and a smaller reward, as measured:
    # seed 0 0.503 against random's 0.306, seed 1 0.384 against 0.238 (1.6x); about 70 s).
    common = ["--vlm", "weakspot", "--weak-terms", "above,below", "--action", "surface-point", "--observation",
              "selected-first", "--caption-subject", "moved", "--pretraining-buffer", "drop",
              "--agent-learning-rate", "1e-3", "--agent-gradient-steps", "1", "--agent-target-entropy", "-3",
              "--reward", "per-sample", "--beta", "0.16", "--episodes", "8",
              "--val-frames", "8", "--test-frames", "8"]
    sac, rnd = tmp_path / "sac", tmp_path / "random"
    done = _main(*common, "--iterations", "6", "--min-iterations", "6", "--out", str(sac), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    done = _main(*common, "--agent", "random", "--budget-from", str(sac), "--out", str(rnd), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _weak_share(sac) > 1.3 * _weak_share(rnd)


def test_caption_subject_moved_describes_the_moved_object_against_the_next_slot(tmp_path):
    out = tmp_path / "moved"
    done = _main("--vlm", "weakspot", "--preset", "smoke", "--caption-subject", "moved", "--export-data",
                 "--out", str(out), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for path in sorted((out / "data").rglob("metadata.jsonl"))
            for line in path.read_text().splitlines()]
    assert rows
    for row in rows:
        md = json.loads(row["metadata"])
        names = [o["name"] for o in md["objects"]]
        assert (row["located"], row["reference"]) == (names[md["moved"]], names[(md["moved"] + 1) % len(names)])

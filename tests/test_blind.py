"""The image-blind baselines (rls3_jax.blind) on hand-made sets, and their place in the run's records."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

import sim
from rls3_jax import blind, checkpoint, datasets, loop, prompts, report, scoring
from rls3_jax.tensorboard import read_scalars
from rls3_jax.vlm.clip import contrastive
from tests.test_loop_mechanics import ScalarLearner, smoke_config


def sample(located: str, reference: str, *terms: str) -> dict:
    return {"located": located, "reference": reference, "terms": prompts.order_terms(terms),
            "caption": prompts.caption(located, reference, terms)}


# ---------------------------------------------------------------------------------------------- PaliGemma


def test_every_constant_answer_states_exactly_its_terms():
    answers = blind.constant_answers()
    assert len(answers) == 63 and len({a for _, a in answers}) == 63
    assert all(scoring.parse_terms(answer) == subset for subset, answer in answers)


def test_paligemma_best_constant_answer_worked_out_by_hand():
    # {above, behind, left} against truths {behind, left}, {left}, {above}: every truth fully stated, each
    # with one extra term: 4, 4, 4. An exact answer scores 5 on one sample and 1 on another (e.g. {behind,
    # left}: 5, 4, 1), stating all six scores 3 everywhere.
    result = blind.paligemma_blind([sample("cup", "table", "behind", "left"), sample("cup", "table", "left"),
                                    sample("cup", "table", "above")])
    assert result["metric"] == pytest.approx(4.0)
    assert result["answer"] == "above, behind and to the left of"
    assert result["consistent_answer"] == result["answer"]
    single = blind.paligemma_blind([sample("cup", "table", "right")])
    assert (single["metric"], single["answer"]) == (5.0, "to the right of")


def test_paligemma_best_answer_may_state_opposites():
    # truths {left}, {right}, {above}. {above, left, right}: 5-1-1 = 3, 3, and 5-1 = 4: 10/3. The best
    # answer without opposites: {above, left} scores 4, 1, 4 = 3 ({above, right} ties later, {above, behind,
    # left} ties with more terms); {left} alone 5, 1, 1.
    result = blind.paligemma_blind([sample("a", "b", "left"), sample("a", "b", "right"), sample("a", "b", "above")])
    assert result["metric"] == pytest.approx(10 / 3)
    assert result["answer"] == "above, to the left and to the right of"
    assert result["consistent_metric"] == pytest.approx(3.0)
    assert result["consistent_answer"] == "above and to the left of"


# ------------------------------------------------------------------------------------------- CLIP prior


def test_clip_text_prior_on_hand_made_counts():
    prior = blind.TextPrior(Counter({"The cup is above the table.": 10, "The table is below the cup.": 10,
                                     "The vase is behind the mug.": 4, "The mug is behind the vase.": 4}))
    samples = [
        sample("cup", "table", "above"),  # 11 vs term-swapped 1, object-swapped 1: credit 1
        sample("cup", "table", "below"),  # 1 vs term-swapped ("above") 11: credit 0
        sample("lamp", "book", "left"),  # nothing counted: a three-way tie, 1/3
        sample("table", "cup", "below"),  # 11 vs 1, 1: credit 1
        sample("vase", "mug", "behind"),  # 5 vs term-swapped 1, object-swapped 5: a two-way tie, 1/2
    ]
    np.testing.assert_allclose(prior.credits(samples), [1, 0, 1 / 3, 1, 1 / 2])
    assert prior.accuracy(samples) == pytest.approx(17 / 30)
    assert blind.clip_blind(samples, prior)["metric"] == pytest.approx(17 / 30)
    worse = blind.clip_blind(samples[1:2], prior)  # the prior is wrong: a blind model still has chance
    assert worse["text_prior"] == 0.0 and worse["metric"] == pytest.approx(1 / 3)


def test_clip_text_prior_swaps_the_term_the_learner_swaps():
    s = sample("cup", "table", "behind", "left")
    evaluated = contrastive.hard_negative_texts([s])[0][0]  # the term-swapped text CLIP is evaluated on
    swaps = [prompts.term_swapped_caption("cup", "table", s["terms"], i) for i in range(2)]
    other = next(t for t in swaps if t != evaluated)
    prior = blind.TextPrior(Counter({s["caption"]: 5, other: 50}))  # only a prior on the wrong swap loses
    assert prior.accuracy([s]) == 1.0
    assert blind.TextPrior(Counter({s["caption"]: 5, evaluated: 50})).accuracy([s]) == 0.0


def test_a_constant_scorer_gets_exactly_a_third():
    metadatas = sim.generate_metadata("test", 40, 5)
    rng = np.random.default_rng(0)
    samples = [datasets.describe(m, rng) for m in metadatas]
    assert blind.TextPrior(Counter()).accuracy(samples) == pytest.approx(1 / 3)
    assert blind.TextPrior(Counter({"The cup is above the table.": 3}), alpha=0.5).accuracy(samples) == pytest.approx(1 / 3)


def test_prior_counts_every_ordered_pair_of_training_metadata(monkeypatch):
    metadatas = sim.generate_metadata("train", 7, 1)
    prior = blind.TextPrior.from_metadata(metadatas)
    assert sum(prior.counts.values()) == 7 * 6
    assert prior.counts[prompts.describe_pair(metadatas[0], 2, 0)["caption"]] >= 1
    splits = []
    monkeypatch.setattr(sim, "generate_metadata", lambda split, n, seed: splits.append(split) or metadatas)
    blind.training_prior.__wrapped__(7, 1)  # not the cached one: this call must reach the generator
    assert splits == ["train"]


def test_metadata_generator_matches_the_rendering_one():
    _, metadatas = sim.generate_samples("val", 6, 11, image_size=32)
    assert sim.generate_metadata("val", 6, 11) == metadatas
    with pytest.raises(ValueError, match="n must be >= 0"):
        sim.generate_metadata("train", -1, 0)


def test_baselines_on_the_default_test_set():
    rng = np.random.default_rng(datasets.TEST_SEED)  # the default preset's test set, as run.py draws it
    samples = [datasets.describe(m, rng) for m in sim.generate_metadata("test", 128, datasets.TEST_SEED)]
    pali = blind.paligemma_blind(samples)
    # stating every term scores 3 on any sample; the best answer without opposites is lower
    assert pali["metric"] >= 3.0 and 2.0 < pali["consistent_metric"] < 3.0
    clip = blind.clip_blind(samples)
    assert 1 / 3 <= clip["metric"] <= 1 and clip["metric"] == max(1 / 3, clip["text_prior"])


# ------------------------------------------------------------------------------------------ in the run


def _expected(out, config) -> dict:
    sets = {split: json.loads(next((out / "cache").glob(f"{split}_*.json")).read_text()) for split in ("val", "test")}
    return {f"{split}_blind_metric": blind.blind_metric(config.vlm, samples)["metric"] for split, samples in sets.items()}


def test_every_record_holds_the_blind_metrics_and_resume_of_an_older_run_adds_them(tmp_path):
    out = tmp_path / "r"
    records = loop.run(smoke_config(iterations=1), out, learner=ScalarLearner())
    expected = _expected(out, smoke_config())
    assert expected["test_blind_metric"] >= 1 / 3
    for r in json.loads(json.dumps(records)):
        assert {k: r[k] for k in expected} == pytest.approx(expected)
    (events,) = (out / "tensorboard").iterdir()
    logged = {(step, tag): v for step, tag, v in read_scalars(events) if tag in expected}
    assert logged == pytest.approx({(i, k): v for i in (0, 1) for k, v in expected.items()})
    tree_file = checkpoint.metadata_file(out / "checkpoint")
    payload = json.loads(tree_file.read_text())
    for record in payload["metadata"]["records"]:  # as written before the baseline existed
        del record["val_blind_metric"], record["test_blind_metric"]
    tree_file.write_text(json.dumps(payload))
    resumed = loop.run(smoke_config(iterations=2), out, resume=True, learner=ScalarLearner())
    on_disk = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in on_disk] == [0, 1, 2] and on_disk == json.loads(json.dumps(resumed))
    assert all({k: r[k] for k in expected} == pytest.approx(expected) for r in on_disk)


# ---------------------------------------------------------------------------------------------- report


def _fake_run(vlm: str, agent: str, blind_value: float | None) -> dict:
    record = {"iteration": 0, "generated_samples": 0, "test_metric": 0.3, "test_per_term": {}, "test_per_complexity": {},
              "train_losses": [], "val_history": [[0, 0.3]]}
    if blind_value is not None:
        record.update(val_blind_metric=blind_value, test_blind_metric=blind_value)
    later = {**record, "iteration": 1, "generated_samples": 10, "test_metric": 0.4}
    return {"dir": None, "config": {"agent": agent, "vlm": vlm, "seed": 0}, "records": [record, later]}


def test_report_draws_and_prints_the_baseline(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [_fake_run("clip", "sac", 0.55), _fake_run("clip", "random", 0.55), _fake_run("negclip", "sac", None)]
    fig, ax = plt.subplots()
    report._draw_blind_lines(ax, runs)  # one line: the NegCLIP run predates the baseline
    assert [(line.get_linestyle(), tuple(line.get_ydata())) for line in ax.lines] == [("--", (0.55, 0.55))]
    plt.close(fig)
    text = report.summary({"SAC / clip": runs[:1], "SAC / negclip": runs[2:]})
    assert "| SAC / clip | 1 | 0.300 ± 0.000 | 0.400 ± 0.000 | 0.550 |" in text
    assert "| SAC / negclip | 1 | 0.300 ± 0.000 | 0.400 ± 0.000 | - |" in text
    report.draw(runs, tmp_path / "fig")
    assert (tmp_path / "fig" / "fig5_score_vs_data.png").is_file()

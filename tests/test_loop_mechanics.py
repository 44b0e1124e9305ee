"""The loop's bookkeeping with a tiny stand-in VLM (the real VLMs run in test_main_smoke.py).

The stand-in learns one scalar: its metric rises with every fine-tuning step until a ceiling, so early
stopping, budgets, rewards, checkpoints and the run directory's rules can be checked quickly and exactly.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rls3_jax import checkpoint, loop
from rls3_jax.config import RunConfig, preset
from rls3_jax.loop import components
from rls3_jax.loop.agent_start import replay_template


class ScalarLearner:
    name = "scalar"
    image_size = 16

    def __init__(self, ceiling=0.6, nan_at_step=None):
        self.ceiling, self.nan_at_step = ceiling, nan_at_step

    def init_state(self, seed):
        return {"params": {"w": jnp.zeros(())}, "opt": {"m": jnp.zeros(())}, "step": jnp.zeros((), jnp.int32)}

    def evaluate(self, state, images, samples):
        assert images.dtype == np.uint8 and images.shape[1:] == (16, 16, 3) and len(images) == len(samples)
        metric = min(float(state["params"]["w"]), self.ceiling)
        n = len(samples)
        return {"metric": metric, "loss": 1 - metric, "reward": (1 - metric) ** 2,
                "per_sample_reward": np.linspace(0.0, 1.0, n), "per_sample_metric": np.full(n, metric),
                "per_term": {"above": metric}, "per_complexity": {1: metric}}

    def finetune(self, state, images, samples, k, key):
        losses = []
        for _ in range(k):
            step = int(state["step"]) + 1
            if self.nan_at_step is not None and step >= self.nan_at_step:
                raise FloatingPointError(f"fine-tuning loss is nan at step {step}")
            state = {**state, "params": {"w": state["params"]["w"] + 0.1}, "step": jnp.asarray(step, jnp.int32)}
            losses.append(1.0 - float(state["params"]["w"]))
        return state, losses


def smoke_config(**changes) -> RunConfig:
    values = preset("smoke", "clip")
    values.update(pretrain_steps=0, iterations=3, episodes=2, t0=4, vlm_steps=2, eval_every=1)
    values.update(changes)
    return RunConfig(vlm="clip", preset="smoke", **values)


@pytest.fixture
def scalar_learner():
    return ScalarLearner()


def read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_records_keys_and_cumulative_counts(tmp_path, scalar_learner):
    records = loop.run(smoke_config(), tmp_path / "r", learner=scalar_learner)
    assert read_metrics(tmp_path / "r") == json.loads(json.dumps(records))
    assert [r["iteration"] for r in records] == [0, 1, 2, 3]
    for key in ("iteration", "generated_samples", "valid_fraction", "mean_extrinsic_reward", "train_loss",
                "val_metric", "test_metric", "val_blind_metric", "test_blind_metric", "test_per_term",
                "test_per_complexity", "generation_s", "vlm_inference_s", "vlm_training_s", "agent_update_s"):
        assert key in records[-1]
    timing = {k for k in records[-1] if k.endswith("_s")}
    assert timing == {"generation_s", "vlm_inference_s", "vlm_training_s", "agent_update_s"}
    generated = [r["generated_samples"] for r in records]  # valid moves: each one an image
    assert generated == sorted(generated)
    assert all(r["generated_samples"] >= 2 * 4 * r["iteration"] for r in records)
    assert all(r["env_steps"] >= r["generated_samples"] for r in records)
    for before, after in zip(records, records[1:]):
        valid = after["generated_samples"] - before["generated_samples"]
        steps = after["env_steps"] - before["env_steps"]
        assert after["valid_fraction"] == pytest.approx(valid / steps)
    for r in records:  # the fine-tuning data's counts: E * eta * T0 samples an iteration, terms 1-3 each
        n = r["iteration"] * 2 * smoke_config().samples_per_episode
        assert sum(r["finetune_complexity_counts"].values()) == n
        assert n <= sum(r["finetune_term_counts"].values()) <= 3 * n
    assert records[-1]["test_metric"] == pytest.approx(0.6)  # 3 iterations x 2 steps x 0.1, capped
    assert [len(r["val_history"]) for r in records[1:]] == [2, 2, 2]  # validation every F=1 of K=2
    assert (tmp_path / "r" / "tensorboard").is_dir()


def test_out_directory_holding_another_run_is_refused_and_untouched(tmp_path, scalar_learner):
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's")
    with pytest.raises(loop.RunError, match="already holds files"):
        loop.run(smoke_config(), out, learner=scalar_learner)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_resume_with_other_settings_is_refused(tmp_path, scalar_learner):
    loop.run(smoke_config(iterations=1), tmp_path / "r", learner=scalar_learner)
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    with pytest.raises(loop.RunError, match="seed"):
        loop.run(smoke_config(iterations=1, seed=5), tmp_path / "r", resume=True, learner=scalar_learner)
    with pytest.raises(loop.RunError, match="holds no run"):
        loop.run(smoke_config(), tmp_path / "empty", resume=True, learner=scalar_learner)
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == before
    # a setting added after the run was started counts as its default value
    run_file = tmp_path / "r" / "run.json"
    record = json.loads(run_file.read_text())
    del record["config"]["caption_pairs"]
    run_file.write_text(json.dumps(record))
    with pytest.raises(loop.RunError, match="caption_pairs: 'one' -> 'all'"):
        loop.run(smoke_config(iterations=1, caption_pairs="all"), tmp_path / "r", resume=True, learner=scalar_learner)
    assert len(loop.run(smoke_config(iterations=2), tmp_path / "r", resume=True, learner=scalar_learner)) == 3  # records 0, 1, 2


def test_resume_of_a_checkpoint_with_the_old_sample_counts_is_refused(tmp_path, scalar_learner):
    loop.run(smoke_config(iterations=1), tmp_path / "r", learner=scalar_learner)
    tree_file = checkpoint.metadata_file(tmp_path / "r" / "checkpoint")
    payload = json.loads(tree_file.read_text())
    for record in payload["metadata"]["records"]:  # as written before env_steps existed
        del record["env_steps"]
    tree_file.write_text(json.dumps(payload))
    with pytest.raises(loop.RunError, match="older rls3_jax"):
        loop.run(smoke_config(iterations=2), tmp_path / "r", resume=True, learner=scalar_learner)


def test_resume_continues_to_the_same_records(tmp_path, scalar_learner):
    full = loop.run(smoke_config(iterations=3), tmp_path / "full", learner=scalar_learner)
    loop.run(smoke_config(iterations=1), tmp_path / "part", learner=scalar_learner)
    resumed = loop.run(smoke_config(iterations=3), tmp_path / "part", resume=True, learner=scalar_learner)
    strip = lambda rs: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rs]
    assert strip(resumed) == strip(full)


class RecordingLearner(ScalarLearner):
    """Remembers the set every fine-tuning call saw: (number of samples, a digest of its images and captions)."""

    def __init__(self):
        super().__init__()
        self.sets = []

    def finetune(self, state, images, samples, k, key):
        self.sets.append((len(samples), hash(images.tobytes()), tuple(s["caption"] for s in samples)))
        return super().finetune(state, images, samples, k, key)


def test_data_window_fine_tunes_on_the_last_n_batches_and_resumes_with_them(tmp_path):
    """--data-window 2: iteration 1 fine-tunes on its batch, later ones on theirs plus the one before (each
    batch exported under data/); a run resumed after iteration 1 reads it back and sees the same sets."""
    config = smoke_config(iterations=3, data_window=2, eval_every=2)  # one fine-tuning call an iteration
    one, full, part = RecordingLearner(), RecordingLearner(), RecordingLearner()
    loop.run(config.replace(data_window=1), tmp_path / "one", learner=one)
    records = loop.run(config, tmp_path / "full", learner=full)
    batch = config.episodes * config.samples_per_episode
    assert [r["finetune_samples"] for r in records] == [0, batch, 2 * batch, 2 * batch]
    assert [n for n, _, _ in one.sets] == [batch] * 3
    assert [n for n, _, _ in full.sets] == [batch, 2 * batch, 2 * batch]
    assert full.sets[0] == one.sets[0] and full.sets[1][2][:batch] == one.sets[0][2]  # the first batch kept
    assert full.sets[2][2] == one.sets[1][2] + one.sets[2][2]  # ... then slid out
    assert sorted(p.name for p in (tmp_path / "full" / "data").iterdir()) == [f"iteration_000{i}" for i in (1, 2, 3)]
    assert not (tmp_path / "one" / "data").exists()
    loop.run(config.replace(iterations=1), tmp_path / "part", learner=part)
    loop.run(config, tmp_path / "part", resume=True, learner=part)
    assert part.sets == full.sets
    for path in (tmp_path / "part" / "data" / "iteration_0003").iterdir():
        path.unlink()
    with pytest.raises(loop.RunError, match="iteration 3.s fine-tuning batch is missing"):
        loop.run(config.replace(iterations=4), tmp_path / "part", resume=True, learner=part)


class EncodingLearner(ScalarLearner):
    """Has a frozen image encoding (each image's pixel sum): records what it encodes and what each fine-tuning
    call is handed."""

    def __init__(self):
        super().__init__()
        self.encoded_batches, self.calls = [], []

    def encode_images(self, state, images):
        self.encoded_batches.append(len(images))
        return jnp.asarray(images.reshape(len(images), -1).sum(1), jnp.float32)

    def finetune(self, state, images, samples, k, key, encoded=None):
        self.calls.append((len(samples), encoded is not None and np.array_equal(
            np.asarray(encoded), images.reshape(len(images), -1).sum(1))))
        return super().finetune(state, images, samples, k, key)


def test_data_window_encodes_each_batch_once_and_again_after_a_resume(tmp_path):
    """A learner's frozen encoding is computed once per batch, not in every fine-tuning call of every
    iteration the batch stays in the window; each call gets its whole set's encoding, and a resumed run
    encodes the batches it reads back."""
    config = smoke_config(iterations=3, data_window=2, vlm_steps=2, eval_every=1)  # two calls an iteration
    batch = config.episodes * config.samples_per_episode
    full = EncodingLearner()
    loop.run(config, tmp_path / "full", learner=full)
    assert full.encoded_batches == [batch] * 3
    assert full.calls == [(batch, True)] * 2 + [(2 * batch, True)] * 4
    part = EncodingLearner()
    loop.run(config.replace(iterations=2), tmp_path / "part", learner=part)
    part.encoded_batches.clear()
    loop.run(config, tmp_path / "part", resume=True, learner=part)
    assert part.encoded_batches == [batch, batch]  # iteration 2's batch read back, then iteration 3's
    assert part.calls[-2:] == [(2 * batch, True)] * 2


def test_early_stopping_for_sac_only(tmp_path, scalar_learner):
    scalar_learner.ceiling = 0.2  # no improvement after the first iteration
    records = loop.run(smoke_config(iterations=8, patience=2, min_iterations=3), tmp_path / "sac", learner=scalar_learner)
    assert records[-1]["stopped_early"] and records[-1]["iteration"] == 3
    records = loop.run(smoke_config(agent="random", iterations=4, patience=2, min_iterations=3), tmp_path / "rnd", learner=scalar_learner)
    assert records[-1]["iteration"] == 4 and not any(r["stopped_early"] for r in records)


@pytest.mark.parametrize("unit, key", [("samples", "generated_samples"), ("moves", "env_steps")])
def test_random_agent_takes_the_sac_runs_budget(tmp_path, scalar_learner, unit, key):
    """As many generated samples as the SAC run, or (the paper's budget) as many moves, invalid ones included."""
    sac = loop.run(smoke_config(iterations=2), tmp_path / "sac", learner=scalar_learner)
    budget = sac[-1][key]
    rnd = loop.run(smoke_config(agent="random", iterations=1, budget_unit=unit), tmp_path / "rnd",
                  budget_from=str(tmp_path / "sac"), learner=scalar_learner)
    assert rnd[-1][key] >= budget > rnd[-2][key]
    with pytest.raises(loop.RunError, match="budget-from"):
        loop.run(smoke_config(), tmp_path / "x", budget_from=str(tmp_path / "nothing"), learner=scalar_learner)
    with pytest.raises(ValueError, match="budget-unit"):
        smoke_config(budget_unit="images").validate()


@pytest.mark.parametrize("mode", ["batch", "per-sample"])
def test_vlm_reward_patches_the_buffer(tmp_path, scalar_learner, mode):
    config = smoke_config(iterations=1, agent="random", reward=mode, beta=10.0)
    records = loop.run(config, tmp_path / "r", learner=scalar_learner)
    tree, _ = checkpoint.load(tmp_path / "r" / "checkpoint")
    template = replay_template(config, 32, 3)
    buffer = checkpoint.restore_like(template, jax.tree.map(lambda x: x[0], tree["agents"]["buffer"]))  # process 0's
    rewards = np.asarray(buffer.data.reward)[: records[-1]["env_steps"]]
    patched = rewards[np.abs(np.abs(rewards) - 1.0) > 1e-6]
    if mode == "batch":
        # one patch per episode: the last transition gets beta * (1 - metric)^2 = 10 * 1 with w = 0
        assert len(patched) == config.episodes
        np.testing.assert_allclose(np.abs(patched - np.sign(patched)), 10.0, atol=1e-5)
    else:
        # every valid transition but each episode's first gets beta * linspace(0, 1)[i] > 0
        assert len(patched) == config.episodes * (config.t0 - 1)


def test_nan_loss_stops_with_checkpoint_intact(tmp_path, monkeypatch, capsys):
    from rls3_jax import main

    monkeypatch.setattr(components, "make_learner", lambda config: ScalarLearner(nan_at_step=3))
    out = tmp_path / "r"
    code = main.main(["--vlm", "clip", "--preset", "smoke", "--out", str(out), "--pretrain-steps", "0",
                      "--iterations", "3", "--vlm-steps", "2", "--t0", "4", "--log-level", "warning"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nan" in err and "\n" not in err
    assert [r["iteration"] for r in read_metrics(out)] == [0, 1]
    _, meta = checkpoint.load(out / "checkpoint")
    assert len(meta["records"]) == 2


def test_caption_pairs_and_clip_vision_reach_the_clip_learner():
    assert loop.make_learner(smoke_config(caption_pairs="all")).all_pairs
    assert loop.make_learner(smoke_config(clip_vision="frozen")).freeze_vision
    default = loop.make_learner(smoke_config())
    assert not default.all_pairs and not default.freeze_vision


def test_answer_format_follows_the_flag_and_the_preset():
    pali = dict(vlm="paligemma", preset="default")
    assert RunConfig(**pali).grounded_answers  # the embedded model in the simulator
    assert not RunConfig(**pali, answer="caption").grounded_answers
    assert not RunConfig(vlm="paligemma", preset="paper").grounded_answers  # the paper answers the caption
    assert not RunConfig(**pali, weights="/some/checkpoint").grounded_answers
    assert RunConfig(**pali, weights="/some/checkpoint", answer="grounded").grounded_answers
    assert not RunConfig(vlm="clip").grounded_answers and not RunConfig(vlm="weakspot").grounded_answers
    smoke = dict(vlm="paligemma", preset="smoke")
    assert loop.make_learner(RunConfig(**smoke)).grounded
    assert not loop.make_learner(RunConfig(**smoke, answer="caption")).grounded


def test_bad_flags_exit_non_zero_with_one_line(tmp_path, capsys):
    from rls3_jax import main

    for argv, needle in ((["--vlm", "gpt"], "--vlm"), (["--agent", "ppo"], "--agent"), (["--eta", "2"], "--eta"),
                         (["--caption-pairs", "some"], "--caption-pairs"),
                         (["--vlm", "paligemma", "--caption-pairs", "all"], "--caption-pairs"),
                         (["--clip-vision", "half"], "--clip-vision"),
                         (["--vlm", "paligemma", "--clip-vision", "frozen"], "--clip-vision"),
                         (["--answer", "boxes"], "--answer"), (["--vlm", "clip", "--answer", "grounded"], "--answer"),
                         (["--vlm", "paligemma", "--env", "unity", "--unity-port", "5004", "--answer", "grounded"],
                          "--env sim"),
                         (["--weights", str(tmp_path / "missing")], "missing")):
        assert main.main([*argv, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_report_draws_the_figures_from_several_runs(tmp_path, scalar_learner):
    from PIL import Image

    from rls3_jax import report

    for seed in (0, 1):
        loop.run(smoke_config(iterations=2, seed=seed), tmp_path / f"sac{seed}", learner=scalar_learner)
        loop.run(smoke_config(agent="random", iterations=2, seed=seed), tmp_path / f"rnd{seed}", learner=scalar_learner)
    dirs = [str(tmp_path / n) for n in ("sac0", "sac1", "rnd0", "rnd1")]
    assert report.main([*dirs, "--out", str(tmp_path / "fig")]) == 0
    for name in ("fig5_score_vs_data", "fig6_per_term", "fig7_complexity", "fig8_finetune_loss", "fig9_validation"):
        with Image.open(tmp_path / "fig" / f"{name}.png") as image:
            assert image.size[0] > 300 and len(np.unique(np.asarray(image.convert("L")))) > 10  # drawn, not blank
    summary = (tmp_path / "fig" / "summary.md").read_text()
    assert "| SAC / clip | 2 |" in summary and "| Random / clip | 2 |" in summary
    assert report.main([str(tmp_path / "nowhere")]) == 2

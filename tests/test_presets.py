"""The presets' agent side: the paper's under --preset paper (and Unity's action and observation there), the
options under which SAC seeks the VLM's weak spot elsewhere in the stand-in, and flags over both."""

import pytest

from rls3_jax import main
from rls3_jax.loop.agent_start import sac_config
from rls3_jax.sac.config import SACConfig


def config(*argv):
    return main.config_from_args(main.build_parser().parse_args(list(argv)))


def agent_side(c):
    sac = sac_config(c)
    return {"reward": c.reward, "beta": c.beta, "buffer": c.pretraining_buffer, "move": c.move,
            "observation": c.observation_order, "pair": c.described_pair, "lr": sac.learning_rate,
            "gradient_steps": sac.gradient_steps, "target_entropy": sac.target_entropy}


@pytest.mark.parametrize("vlm", ["paligemma", "clip", "negclip"])
def test_paper_preset_keeps_the_papers_agent_side(vlm):
    paper = SACConfig()
    assert agent_side(config("--vlm", vlm, "--preset", "paper")) == {
        "reward": "batch", "beta": 10.0, "buffer": "keep", "move": "displacement", "observation": "slots",
        "pair": "random", "lr": paper.learning_rate, "gradient_steps": paper.gradient_steps,
        "target_entropy": paper.target_entropy}


@pytest.mark.parametrize("vlm", ["paligemma", "clip", "negclip", "weakspot"])
@pytest.mark.parametrize("preset", ["default", "smoke"])
def test_other_presets_use_the_weak_spot_seeking_agent_in_the_stand_in(vlm, preset):
    assert agent_side(config("--vlm", vlm, "--preset", preset)) == {
        "reward": "per-sample", "beta": 0.8, "buffer": "drop", "move": "surface-point",
        "observation": "selected-first", "pair": "moved", "lr": 1e-3, "gradient_steps": 2, "target_entropy": -1.5}


@pytest.mark.parametrize("preset, beta", [("default", 1.6), ("smoke", 0.4)])
def test_unity_keeps_the_papers_agent_side_with_beta_scaled_to_t0(preset, beta):
    paper = SACConfig()
    assert agent_side(config("--env", "unity", "--unity-port", "5004", "--preset", preset)) == {
        "reward": "batch", "beta": pytest.approx(beta), "buffer": "keep", "move": "displacement",
        "observation": "slots", "pair": "random", "lr": paper.learning_rate, "gradient_steps": paper.gradient_steps,
        "target_entropy": paper.target_entropy}


def test_flags_override_the_preset():
    side = agent_side(config("--reward", "batch", "--pretraining-buffer", "keep", "--beta", "2", "--action",
                             "surface", "--observation", "slots", "--agent-learning-rate", "5e-4"))
    assert (side["reward"], side["buffer"], side["beta"], side["move"], side["lr"]) == (
        "batch", "keep", 2.0, "surface", 5e-4)
    assert side["pair"] == "random"  # the moved object's partner is only in view with selected-first
    assert agent_side(config("--preset", "paper", "--caption-subject", "moved", "--observation",
                             "selected-first"))["pair"] == "moved"


def test_the_weak_spot_preset_runs_the_scale_that_met_the_goal():
    c = config("--vlm", "weakspot")
    assert (c.iterations, c.min_iterations, c.episodes, c.t0, c.eta) == (12, 12, 40, 32, 0.5)

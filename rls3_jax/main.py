"""`python -m rls3_jax.main`: the RLS3 loop (Algorithm 1) from the command line.

Every Algorithm 1 parameter has its own flag that overrides the preset. Bad input stops with a one-line
error on stderr and exit code 2, before anything in --out is touched.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from rls3_jax.config import (
    ACTIONS,
    AGENTS,
    ANSWERS,
    BUDGET_UNITS,
    CAPTION_PAIRS,
    CAPTION_SUBJECTS,
    CLIP_VISION,
    DTYPES,
    ENVS,
    OBSERVATIONS,
    PRESETS,
    PRETRAINING_BUFFERS,
    REWARD_MODES,
    RUBRIC_VLMS,
    VLMS,
    RunConfig,
    preset,
)

# flag -> (RunConfig field, type, help with the paper's value)
_LOOP_FLAGS = {
    "--iterations": ("iterations", int, "I, the most fine-tuning iterations (paper: until early stopping)"),
    "--episodes": ("episodes", int, "E, RL episodes per iteration (paper: 20)"),
    "--t0": ("t0", int, "T0, minimum valid samples per episode (paper: 200)"),
    "--eta": ("eta", float, "eta, share of an episode's samples kept for fine-tuning (paper: 0.5)"),
    "--vlm-steps": ("vlm_steps", int, "K, fine-tuning steps per iteration for PaliGemma (paper: 256) or "
                                      "epochs for CLIP/NegCLIP (paper: 10)"),
    "--eval-every": ("eval_every", int, "F, validate every F steps (PaliGemma) or epochs (CLIP)"),
    "--data-window": ("data_window", int, "fine-tune on the batches of this iteration and the N-1 before it, "
                                          "kept under --out/data (paper: 1, the batch cleared every iteration)"),
    "--beta": ("beta", float, "beta, scale of the VLM reward (paper: 10, on the episode's last transition; the "
                                      "other presets: 0.8 on each valid transition in the stand-in, 10 * T0 / 200 in Unity)"),
    "--pretrain-steps": ("pretrain_steps", int, "agent steps of intrinsic-reward pretraining (paper: 100000)"),
    "--patience": ("patience", int, "early stopping: iterations without significant validation improvement "
                                    "(paper: 10 for PaliGemma, 5 for CLIP)"),
    "--min-iterations": ("min_iterations", int, "early stopping starts after this many iterations "
                                                "(paper: 15 for PaliGemma, 10 for CLIP)"),
    "--val-frames": ("val_frames", int, "fixed validation frames from the training scenes (paper: 500)"),
    "--test-frames": ("test_frames", int, "fixed test frames from the unseen test scenes (paper: 1000)"),
    "--vlm-batch-size": ("vlm_batch_size", int, "VLM minibatch size for fine-tuning and inference"),
    "--learning-rate": ("learning_rate", float, "VLM learning rate (default: the model's own)"),
    "--agent-learning-rate": ("agent_learning_rate", float, "SAC's learning rate, in pretraining and the loop "
                                                            "(paper and Unity: 3e-4, Stable-Baselines3's; the "
                                                            "other presets: 1e-3; 0: a loaded agent's)"),
    "--agent-gradient-steps": ("agent_gradient_steps", int, "SAC updates per move, in pretraining and the loop "
                                                            "(paper and Unity: 1; the other presets: 2; 0: a "
                                                            "loaded agent's)"),
    "--agent-target-entropy": ("agent_target_entropy", float, "SAC's entropy target, in pretraining and the loop "
                                                              "(paper and Unity: minus the action's dimensions, "
                                                              "-3; the other presets: -1.5; 0: a loaded agent's)"),
}


LOG_LEVELS = ("debug", "info", "warning", "error")


class UsageError(Exception):
    """A bad command line; its message is argparse's one-line complaint."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage and exit; the caller prints one line
        raise UsageError(message)


def _add_agent_side_flags(parser: argparse.ArgumentParser) -> None:
    """What the agent does, sees and is paid for (docs/sac.md measures each option). --preset paper keeps the
    paper's; the other presets, in the stand-in simulator, what makes SAC seek the VLM's weak spot."""
    group = parser.add_argument_group("the agent's side of the loop")
    group.add_argument("--reward", default=None, choices=REWARD_MODES,
                       help="batch: the paper's one VLM reward on the episode's last transition; per-sample: each "
                            "valid transition its own sample's reward (default: batch with --preset paper or --env "
                            "unity, else per-sample)")
    group.add_argument("--action", default="auto", choices=ACTIONS,
                       help="how an action moves the selected object: displacement (the paper's, Unity's) or "
                            "surface (the stand-in's: a designated surface and a place on it) or surface-point (a "
                            "surface and the point of the room to come nearest); auto: surface-point in the "
                            "simulator outside --preset paper, else displacement")
    group.add_argument("--observation", default="auto", choices=OBSERVATIONS,
                       help="the order of the objects in the agent's observation: slots (the paper's, Unity's) or "
                            "selected-first (the stand-in's: the object to move first); auto: selected-first in the "
                            "simulator outside --preset paper, else slots")
    group.add_argument("--caption-subject", default="auto", choices=CAPTION_SUBJECTS,
                       help="the pair of objects a generated sample's caption describes: random (the paper's, drawn "
                            "after the move) or moved (the moved object relative to the slot after it, the second "
                            "object the agent sees with --observation selected-first; auto: moved with selected-first, "
                            "else random); the fixed sets stay random")
    group.add_argument("--pretraining-buffer", default=None, choices=PRETRAINING_BUFFERS,
                       help="the agent's replay buffer when the loop starts: keep the pretraining's transitions "
                            "(rewarded for feasibility alone) or drop them, so that every transition the critics "
                            "learn from carries the VLM reward (default: keep with --preset paper or --env unity, "
                            "else drop)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m rls3_jax.main",
        description="RLS3: an RL agent generates the scenes a vision-language model gets wrong; the model is "
                    "fine-tuned on them (Algorithm 1).",
    )
    parser.add_argument("--vlm", default="paligemma", choices=VLMS,
                        help="the VLM: the embedded PaliGemma or CLIP/NegCLIP (or --weights), or the scripted "
                             "weak-spot VLM (default: paligemma)")
    parser.add_argument("--agent", default="sac", choices=AGENTS, help="SAC (RLS3) or the random baseline")
    parser.add_argument("--env", default="sim", choices=ENVS, help="the stand-in simulator or a Unity build")
    parser.add_argument("--preset", default="default", choices=PRESETS,
                        help="paper = the paper's values; default = a few minutes "
                             "(at most ~10) on a 2-core CPU; smoke = under a minute")
    parser.add_argument("--out", default=None,
                        help="run directory: metrics, checkpoints, TensorBoard events (default: a new "
                             "runs/VLM-AGENT-seedN-TIME)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default=None,
                        help="a local Hugging Face checkpoint directory (default: the embedded small model)")
    parser.add_argument("--agent-from", default=None, metavar="CKPT",
                        help="start from a pretrained agent (python -m rls3_jax.sac.pretrain --out CKPT) "
                             "instead of pretraining for --pretrain-steps")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--budget-from", default=None, metavar="RUN_DIR",
                        help="random agent: generate as many samples (valid moves) as the SAC run in RUN_DIR did")
    parser.add_argument("--budget-unit", default="samples", choices=BUDGET_UNITS,
                        help="--budget-from matches the SAC run's generated samples "
                             "(images from valid moves), or all its moves, invalid ones included (the paper's budget)")
    parser.add_argument("--caption-pairs", default="one", choices=CAPTION_PAIRS,
                        help="CLIP/NegCLIP fine-tune on each sample's one caption "
                             "(the paper) or on a caption for every ordered pair of the objects in its image")
    parser.add_argument("--clip-vision", default="trained", choices=CLIP_VISION,
                        help="CLIP/NegCLIP fine-tune updates the vision tower too (the "
                             "paper) or keeps it as loaded and trains the text tower and projections")
    parser.add_argument("--answer", default="auto", choices=ANSWERS,
                        help="PaliGemma's answer: the caption (the paper), or both objects' boxes in its "
                             "detection format and then the caption; auto: grounded for the embedded model in "
                             "the simulator outside --preset paper, the caption otherwise")
    parser.add_argument("--weak-terms", default="above,below",
                        help="--vlm weakspot: comma-separated terms the scripted VLM gets wrong (of above, below, "
                             "behind, in front, left, right)")
    parser.add_argument("--weakspot-learns", type=int, default=0, metavar="N",
                        help="--vlm weakspot: a weak term is mastered once fine-tuned on N samples holding it "
                             "(0: never)")
    parser.add_argument("--export-data", action="store_true",
                        help="write each fine-tuning batch as PNG images with their metadata.jsonl under --out/data")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS,
                        help="what goes to stderr: info = one line per iteration (run.log in --out always has them), "
                             "debug = also each episode and phase within an iteration")
    _add_agent_side_flags(parser)
    for flag, (_, kind, text) in _LOOP_FLAGS.items():
        parser.add_argument(flag, type=kind, default=None, help=text)
    parser.add_argument("--unity-build", default=None, help="path of a Unity player build (--env unity)")
    parser.add_argument("--unity-port", type=int, default=None, help="port of a running Unity editor (--env unity)")
    parser.add_argument("--unity-timeout", type=float, default=60.0, help="seconds to wait for Unity")
    scale = parser.add_argument_group("scale-out (multi-device, multi-host, parallel simulators)")
    scale.add_argument("--mesh", default=None, metavar="data=N,fsdp=M",
                       help="device mesh for the VLM: batches split over all devices, large parameters and their "
                            "optimiser state split along fsdp (default: every device on data)")
    scale.add_argument("--dtype", default="auto", choices=DTYPES,
                       help="VLM compute dtype: auto is bfloat16 on GPU/TPU (bfloat16: PaliGemma "
                            "then also stores its frozen parameters in bfloat16)")
    scale.add_argument("--num-envs", type=int, default=1,
                       help="simulators the agent steps together, N transitions per agent update (paper: 1)")
    scale.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="multi-host: HOST:PORT of process 0 (or JAX_COORDINATOR_ADDRESS), or 'auto' to let "
                            "JAX detect the cluster (Cloud TPU slices, SLURM, Open MPI)")
    scale.add_argument("--num-processes", type=int, default=None, help="multi-host: number of processes")
    scale.add_argument("--process-id", type=int, default=None, help="multi-host: this process's index")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    values = preset(args.preset, args.vlm, args.env)
    for field in [field for field, _, _ in _LOOP_FLAGS.values()] + ["reward", "pretraining_buffer"]:
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    config = RunConfig(
        vlm=args.vlm, agent=args.agent, env=args.env, preset=args.preset, seed=args.seed, weights=args.weights,
        agent_from=args.agent_from, budget_unit=args.budget_unit, caption_pairs=args.caption_pairs,
        answer=args.answer, action=args.action, observation=args.observation, caption_subject=args.caption_subject,
        clip_vision=args.clip_vision, weak_terms=args.weak_terms, weakspot_learns=args.weakspot_learns,
        export_data=args.export_data, unity_build=args.unity_build,
        unity_port=args.unity_port, unity_timeout_s=args.unity_timeout, mesh=args.mesh, dtype=args.dtype,
        num_envs=args.num_envs, **values,
    )
    config.validate()
    return config


def enable_compilation_cache() -> None:
    """Keep XLA's compiled programs on disk so a second run (or a resumed one) skips most compile time."""
    import jax

    if jax.config.jax_compilation_cache_dir is None and os.environ.get("RLS3_JAX_NO_CACHE") is None:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rls3_jax" / "xla"
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def configure_logging(level: str) -> None:
    """The run's log lines on stderr (a terminal, or a cluster job's log file) at `level`."""
    logger = logging.getLogger("rls3_jax")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(level.upper())
    logger.handlers = [h for h in logger.handlers if not getattr(h, "rls3_stderr", False)]
    handler.rls3_stderr = True
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


def _error(err: BaseException) -> int:
    print(f"error: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    try:  # bad flags and values stop here, before JAX is imported
        args = build_parser().parse_args(argv)
        config = config_from_args(args)
    except (UsageError, ValueError) as err:
        return _error(err)
    configure_logging(args.log_level)
    try:
        from rls3_jax import distributed

        distributed.initialize(args.coordinator, args.num_processes, args.process_id)  # before devices are used
    except (ValueError, RuntimeError) as err:
        return _error(err)
    enable_compilation_cache()
    from rls3_jax.loop import RunError, run  # after parsing, so --help stays instant

    try:
        if args.out is None:
            import jax

            if jax.process_count() > 1:
                raise ValueError("a multi-process run needs --out: one directory all processes share")
            if args.resume:
                raise ValueError("--resume needs --out: the run directory to continue")
            args.out = f"runs/{config.vlm}-{config.agent}-seed{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        records = run(config, args.out, resume=args.resume, budget_from=args.budget_from)
    except (RunError, ValueError, FileNotFoundError, NotADirectoryError, FloatingPointError, OSError) as err:
        return _error(err)
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint in --out is intact; continue with --resume", file=sys.stderr)
        return 130
    from rls3_jax import distributed

    if not distributed.is_main():
        return 0
    first, last = records[0], records[-1]
    early = last["stopped_early"] and last["iteration"] < config.iterations  # patience ran out before the last
    print(f"{config.vlm} / {config.agent}: test {'mean rubric score' if config.vlm in RUBRIC_VLMS else 'accuracy'} {first['test_metric']:.3f} -> "
          f"{last['test_metric']:.3f} after {last['iteration']} iterations and {last['generated_samples']} "
          f"generated samples{' (stopped early)' if early else ''}")
    print(f"outputs in {args.out}: metrics.jsonl, run.log, tensorboard/, checkpoint/; figures: python -m rls3_jax.report "
          f"{args.out}")
    return 0


if __name__ == "__main__":
    from rls3_jax import huge_pages

    huge_pages.reexec([sys.executable, "-m", "rls3_jax.main", *sys.argv[1:]])  # before JAX: see huge_pages
    sys.exit(main())

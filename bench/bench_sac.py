"""SAC throughput on the stand-in simulator: SB3 (PyTorch), SBX (JAX), ours (Python env), ours (fully jitted),
the ceiling (the bare jitted update) and the machine's arithmetic bound on it. Prints one JSON line.

    python bench/bench_sac.py [--steps 5000] [--learning-starts 1000] [--repeats 1] [--agents sb3,sbx,...]

Every agent runs learning_starts random steps then `steps` learning steps (one gradient step each) with the
same hyperparameters (SB3's SAC defaults, batch 256, two hidden layers of 256) on `sim.IndoorSceneEnv`
(train split, episodes truncated after 200 steps). Steps/s count the learning phase after its first
`--warmup` learning steps, so JIT compilation is excluded for every agent. Valid fractions are over each
agent's last 1,000 steps. The bound is the update's FLOPs (XLA's cost analysis) at the rate this machine
reaches on the update's dominant matmul alone. Needs the `bench` extra (stable-baselines3, sbx-rl).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import sim  # noqa: E402
from rls3_jax.envs import jax_sim  # noqa: E402
from rls3_jax.sac import agent as sac  # noqa: E402
from rls3_jax.sac import buffer as replay  # noqa: E402
from rls3_jax.sac import pretrain  # noqa: E402
from rls3_jax.sac.config import SACConfig  # noqa: E402

EPISODE_STEPS = 200


def make_env():
    return sim.IndoorSceneEnv("train", max_episode_steps=EPISODE_STEPS)


def bench_sb3_like(algo_cls, args, seed):
    """SB3 or SBX `SAC.learn` with a callback that times the learning phase and records validity."""
    from stable_baselines3.common.callbacks import BaseCallback

    start_at = args.learning_starts + args.warmup
    record = {"valid": [], "t0": None, "t1": None}

    class Probe(BaseCallback):
        def _on_step(self) -> bool:
            record["valid"].append(bool(self.locals["infos"][0]["valid"]))
            if self.num_timesteps == start_at:
                record["t0"] = time.perf_counter()
            return True

    model = algo_cls("MlpPolicy", make_env(), learning_starts=args.learning_starts, buffer_size=1_000_000,
                     batch_size=256, learning_rate=3e-4, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1,
                     ent_coef="auto", policy_kwargs={"net_arch": [256, 256]}, seed=seed, verbose=0)
    model.learn(total_timesteps=args.learning_starts + args.steps, callback=Probe())
    elapsed = time.perf_counter() - record["t0"]
    # the callback of step start_at runs before that step's gradient step: count the steps timed after it
    return (args.steps - args.warmup) / elapsed, float(np.mean(record["valid"][-1000:]))


def bench_sb3(args, seed):
    import torch
    from stable_baselines3 import SAC

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    return bench_sb3_like(SAC, args, seed)


def bench_sbx(args, seed):
    from sbx import SAC

    return bench_sb3_like(SAC, args, seed)


def bench_ours(args, seed):
    """The Python simulator stepped with one fused jitted dispatch (`SAC.step`) per environment step: the
    driver `pretrain.run_python`, timed from its second call (after learning_starts + warmup steps)."""
    config = SACConfig(learning_starts=args.learning_starts)
    env = make_env()
    state = sac.init(config, 32, 3, seed)
    buffer = replay.init(config.buffer_size, 32, 3)
    state, buffer, untimed = pretrain.run_python(env, sac.SAC, state, buffer, args.learning_starts + args.warmup,
                                                 seed)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    # a second run of the same driver: one more reset (a new episode), then the timed steps
    state, buffer, timed = pretrain.run_python(env, sac.SAC, state, buffer, args.steps - args.warmup, seed + 1)
    jax.block_until_ready(state)  # run_python also waits for the last step's metrics
    elapsed = time.perf_counter() - t0
    return (args.steps - args.warmup) / elapsed, float(np.concatenate([untimed, timed])[-1000:].mean())


def bench_ours_jit(args, seed):
    """Environment, buffer and update in one lax.scan; chunks of equal length share one compilation."""
    config = SACConfig(learning_starts=args.learning_starts)
    env = jax_sim.from_python_env(make_env())
    state = sac.init(config, 32, 3, seed)
    buffer = replay.init(config.buffer_size, 32, 3)
    chunk = args.chunk
    if args.learning_starts % chunk or args.steps % chunk:
        raise SystemExit(f"--chunk {chunk} must divide --learning-starts and --steps")
    state, carry = pretrain.rollout_start(env, sac.SAC, state, seed)
    valid_parts = []
    # random phase plus one learning chunk: compiles the scan once (the learning branch is compiled with it)
    warm_chunks = args.learning_starts // chunk + 1
    for _ in range(warm_chunks):
        state, buffer, carry, valid, _ = pretrain.rollout(env, sac.SAC, state, buffer, carry, chunk)
        valid_parts.append(valid)
    jax.block_until_ready(valid)
    timed = args.steps // chunk - 1
    t0 = time.perf_counter()
    for _ in range(timed):
        state, buffer, carry, valid, _ = pretrain.rollout(env, sac.SAC, state, buffer, carry, chunk)
        valid_parts.append(valid)
    jax.block_until_ready(valid)
    elapsed = time.perf_counter() - t0
    valid = np.concatenate([np.asarray(v) for v in valid_parts])
    return timed * chunk / elapsed, float(valid[-1000:].mean())


def bench_ceiling(args, seed):
    """The bare jitted SAC update in lax.scan over random batches of the benchmark's shapes."""
    config = SACConfig()
    state = sac.init(config, 32, 3, seed)
    chunk = args.chunk

    # The batches are drawn once beforehand: drawing 17k threefry numbers per update would cost more than
    # sampling from a buffer does and hide the update's own speed.
    key = jax.random.PRNGKey(seed)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    batches = replay.Transition(
        obs=jax.random.uniform(k1, (chunk, 256, 32), minval=-1, maxval=1),
        action=jax.random.uniform(k2, (chunk, 256, 3), minval=-1, maxval=1),
        reward=jnp.where(jax.random.uniform(k3, (chunk, 256)) < 0.5, 1.0, -1.0),
        next_obs=jax.random.uniform(k4, (chunk, 256, 32), minval=-1, maxval=1),
        done=jnp.zeros((chunk, 256)),
    )

    @functools.partial(jax.jit, donate_argnums=0)
    def run(state, batches):
        def body(state, batch):
            state, metrics = sac.update(state, batch)
            return state, metrics["critic_loss"]

        return jax.lax.scan(body, state, batches)

    state, losses = run(state, batches)
    jax.block_until_ready(losses)
    n = max(args.steps // chunk - 1, 1)
    t0 = time.perf_counter()
    for _ in range(n):
        state, losses = run(state, batches)
    jax.block_until_ready(losses)
    return n * chunk / (time.perf_counter() - t0), None


def bench_bound(args, seed):
    """Updates/s if every FLOP of the update ran at the speed of a chain of [256,256] @ [256,256] matmuls
    (16 of them, 0.54 of the update's 0.61 GFLOP; the rest are smaller matmuls, Adam and the losses)."""
    state = sac.init(SACConfig(), 32, 3, seed)
    batch = replay.Transition(jnp.zeros((256, 32)), jnp.zeros((256, 3)), jnp.zeros(256), jnp.zeros((256, 32)),
                              jnp.zeros(256))
    cost = sac.update.lower(state, batch).compile().cost_analysis()
    update_flops = (cost[0] if isinstance(cost, list) else cost)["flops"]

    @jax.jit
    def chain(h, w):
        return jax.lax.scan(lambda h, _: (jnp.tanh(h @ w), None), h, None, length=50)[0]

    key_h, key_w = jax.random.split(jax.random.PRNGKey(seed))
    h, w = 0.05 * jax.random.normal(key_h, (256, 256)), 0.05 * jax.random.normal(key_w, (256, 256))
    chain(h, w).block_until_ready()
    n = 100  # ~5,000 matmuls, a few seconds: long enough to average the machine's drift like the ceiling
    t0 = time.perf_counter()
    for _ in range(n):
        h = chain(h, w)
    h.block_until_ready()
    gemm_flops_per_s = n * 50 * 2 * 256**3 / (time.perf_counter() - t0)
    extras = {"update_gflop": update_flops / 1e9, "gemm_256_gflop_per_s": gemm_flops_per_s / 1e9}
    return gemm_flops_per_s / update_flops, None, extras


BENCHES = {"sb3": bench_sb3, "sbx": bench_sbx, "ours": bench_ours, "ours_jit": bench_ours_jit,
           "ceiling": bench_ceiling, "bound": bench_bound}
KEYS = {"sb3": "sb3_steps_per_s", "sbx": "sbx_steps_per_s", "ours": "ours_steps_per_s",
        "ours_jit": "ours_jit_steps_per_s", "ceiling": "ceiling_updates_per_s",
        "bound": "arithmetic_bound_updates_per_s"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5000, help="learning steps (after learning_starts)")
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=500, help="learning steps not timed (compilation)")
    parser.add_argument("--chunk", type=int, default=500, help="steps per compiled scan (jitted paths)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per agent; the median is reported")
    parser.add_argument("--agents", default="sb3,sbx,ours,ours_jit,ceiling,bound")
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.warmup >= args.steps or args.warmup != args.chunk:
        parser.error("--warmup must equal --chunk and be below --steps (the jitted path skips one chunk)")
    agents = args.agents.split(",")
    unknown = set(agents) - set(BENCHES)
    if unknown:
        parser.error(f"unknown agents {sorted(unknown)}; choose from {sorted(BENCHES)}")

    result: dict = {}
    # round robin, so that a change in the machine's load hits every agent alike
    all_runs = {name: [] for name in agents}
    for r in range(args.repeats):
        for name in agents:
            all_runs[name].append(BENCHES[name](args, args.seed + r))
    for name in agents:
        runs = all_runs[name]
        result[KEYS[name]] = round(statistics.median(r[0] for r in runs), 1)
        for extra in (runs[0][2] if len(runs[0]) > 2 else {}):
            result[extra] = round(statistics.median(r[2][extra] for r in runs), 3)
        if runs[0][1] is not None:  # the ceiling and the bound have no environment
            result[f"{name}_valid_fraction_last_1000"] = round(statistics.median(r[1] for r in runs), 3)
        if args.repeats > 1:
            result[f"{KEYS[name]}_runs"] = [round(r[0], 1) for r in runs]
    ratios = {"ours_vs_sb3": ("ours_steps_per_s", "sb3_steps_per_s"),
              "ours_vs_sbx": ("ours_steps_per_s", "sbx_steps_per_s"),
              "ours_jit_vs_sb3": ("ours_jit_steps_per_s", "sb3_steps_per_s"),
              "ours_jit_vs_ceiling": ("ours_jit_steps_per_s", "ceiling_updates_per_s"),
              "ours_vs_ceiling": ("ours_steps_per_s", "ceiling_updates_per_s"),
              "sbx_vs_ceiling": ("sbx_steps_per_s", "ceiling_updates_per_s"),
              "ceiling_vs_bound": ("ceiling_updates_per_s", "arithmetic_bound_updates_per_s")}
    for name, (num, den) in ratios.items():
        if num in result and den in result:
            result[name] = round(result[num] / result[den], 2)
    result.update(steps=args.steps, learning_starts=args.learning_starts, repeats=args.repeats,
                  cpu_count=os.cpu_count(), load_average_1min=round(os.getloadavg()[0], 2),
                  jax=jax.__version__, backend=jax.default_backend())
    print(json.dumps(result))


if __name__ == "__main__":
    main()

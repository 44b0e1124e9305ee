"""What this machine allows a jitted step: its FLOPs (XLA's cost analysis) over the rate this machine reaches on
a chain of fp32 [256,256] @ [256,256] matmuls, measured in the same run (bench/bench_sac.py's bound).

    flops = compiled_flops(step, *args)        # of OUR compiled program, before or after timing it
    rate = matmul_flops_per_s()                # ~1.5 s on the 2-core CPU
    result.update(train_bound(flops, rate, ours_s, torch_s))
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def compiled_flops(jitted, *args) -> float:
    """FLOPs of one call of `jitted(*args)` as XLA's cost analysis of the compiled program counts them (a dict,
    or a list of one dict per program on some jax versions). Arguments are only lowered: donated buffers stay."""
    cost = jitted.lower(*args).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def matmul_flops_per_s(seed: int = 0, size: int = 256, length: int = 50, calls: int = 100) -> float:
    """FLOP/s of `calls` jitted scans of `length` tanh(h @ w) steps on [size, size] fp32 (after one warm-up call)."""

    @jax.jit
    def chain(h, w):
        return jax.lax.scan(lambda h, _: (jnp.tanh(h @ w), None), h, None, length=length)[0]

    key_h, key_w = jax.random.split(jax.random.PRNGKey(seed))
    h = 0.05 * jax.random.normal(key_h, (size, size), jnp.float32)
    w = 0.05 * jax.random.normal(key_w, (size, size), jnp.float32)
    chain(h, w).block_until_ready()
    start = time.perf_counter()
    for _ in range(calls):
        h = chain(h, w)
    h.block_until_ready()
    return calls * length * 2 * size**3 / (time.perf_counter() - start)


def train_bound(flops: float, rate: float, ours_s: float, torch_s: float) -> dict:
    """The bound's keys: the step's GFLOP, the machine's matmul GFLOP/s, the step's time at that rate, and the
    fraction of it reached by our step and by transformers' step (same FLOPs; 1.0 = at the machine's limit)."""
    bound_s = flops / rate
    return {
        "train_gflop": round(flops / 1e9, 3),
        "matmul_gflop_per_s": round(rate / 1e9, 1),
        "train_bound_ms": round(bound_s * 1e3, 2),
        "train_bound_fraction": round(bound_s / ours_s, 3),
        "torch_train_bound_fraction": round(bound_s / torch_s, 3),
    }

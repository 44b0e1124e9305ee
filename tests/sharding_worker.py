"""Run by tests/test_sharding.py with 8 host-platform devices: train, evaluate and checkpoint the learners on
several meshes and on one device; prints one JSON line of what it measured."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from rls3_jax import checkpoint, datasets, sharding
from rls3_jax.vlm.clip.learner import ClipLearner
from rls3_jax.vlm.paligemma.learner import PaliGemmaLearner

START = time.perf_counter()
# Pure data parallelism, and parameters split four ways (each mesh compiles the learners anew: two keep it short).
MESHES = ("data=8,fsdp=1", "data=2,fsdp=4")
STEPS = 3
N = 8


def flat(tree) -> dict:
    pairs = jax.tree_util.tree_flatten_with_path(sharding.fetch(tree))[0]
    return {jax.tree_util.keystr(k): np.asarray(v, np.float64) for k, v in pairs}


def max_diff(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def layout(state) -> dict:
    params = leaves(state["params"])
    largest = max(params, key=lambda x: x.size)
    sharded = lambda x: not x.sharding.is_fully_replicated
    small = [x for x in params if x.size < sharding.MIN_SHARD_SIZE]
    big_opt = [x for x in leaves(state["opt"]) if x.size >= sharding.MIN_SHARD_SIZE and any(s % 4 == 0 for s in x.shape)]
    total = sum(x.size * x.dtype.itemsize for x in leaves(state))
    return {
        "devices": len(largest.sharding.device_set),
        "largest": {"shape": list(largest.shape), "spec": [str(s) for s in largest.sharding.spec],
                    "local_shape": list(largest.addressable_shards[0].data.shape)},
        "opt_sharded_like_params": bool(big_opt) and all(sharded(x) for x in big_opt),
        "replicated_small": bool(small) and all(
            x.sharding.is_fully_replicated and x.addressable_shards[0].data.shape == x.shape for x in small),
        "sharded_fraction": sum(x.nbytes for x in params if sharded(x)) / sum(x.nbytes for x in params),
        "per_device_bytes": sharding.per_device_bytes(state),
        "total_bytes": total,
        "split_bytes": sum(x.size * x.dtype.itemsize // (1 if x.sharding.is_fully_replicated else 4) for x in leaves(state)),
    }


def evaluation(result: dict) -> dict:
    out = {"loss": float(result["loss"]), "per_sample_metric": [float(x) for x in result["per_sample_metric"]]}
    if "answers" in result:
        out["answers"] = list(result["answers"])
    return out


def run_model(name: str, make, images, samples, finetune_k: int, meshes=MESHES) -> tuple[dict, dict]:
    one = sharding.make_mesh(None, devices=jax.devices()[:1])
    report, states = {}, {}
    key = jax.random.PRNGKey(3)
    ref_learner = make(one)
    initial = ref_learner.init_state(0)
    state, losses = ref_learner.finetune(initial, images, samples, finetune_k, key)
    ref_params = flat(state["params"])
    report["one_device"] = {"losses": losses, "moved": max_diff(ref_params, flat(initial["params"]))}
    report["evaluate_one_device"] = evaluation(ref_learner.evaluate(state, images, samples))
    for spec in meshes:
        learner = make(sharding.make_mesh(spec))
        got, losses = learner.finetune(learner.init_state(0), images, samples, finetune_k, key)
        report[spec] = {"losses": losses, "max_param_diff": max_diff(flat(got["params"]), ref_params)}
        states[spec] = (learner, got)
        print(f"{name} {spec} {time.perf_counter() - START:.1f}s", file=sys.stderr)
    learner, got = states["data=2,fsdp=4"]
    report["layout"] = layout(got)
    report["evaluate"] = evaluation(learner.evaluate(got, images, samples))
    return report, states


def main(out: Path) -> None:
    assert jax.device_count() == 8, jax.devices()
    pali_images, metas = datasets.generate_fixed_set("train", N, 64, seed=11)
    report = {}
    report["paligemma"], pali_states = run_model(
        "paligemma",
        lambda mesh: PaliGemmaLearner.create(mesh=mesh, train_batch_size=N, eval_batch_size=N, max_new_tokens=8),
        pali_images, metas, STEPS)
    clip_images, clip_samples = datasets.generate_fixed_set("train", N, 96, seed=12)
    report["clip"], _ = run_model(
        "clip", lambda mesh: ClipLearner.create(mesh=mesh, batch_size=N, eval_batch_size=N, warmup_steps=1),
        clip_images, clip_samples, STEPS, meshes=MESHES[1:])  # both axes at once; PaliGemma covers data=8

    # A sharded checkpoint: saved from data=2,fsdp=4, restored onto the same mesh and onto data=8 (replicated).
    learner, state = pali_states["data=2,fsdp=4"]
    checkpoint.save(out / "ckpt", state)
    same, _ = checkpoint.load(out / "ckpt", like=state)
    other_learner, other_state = pali_states["data=8,fsdp=1"]
    elsewhere = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
                             other_learner.state_sharding)
    other, _ = checkpoint.load(out / "ckpt", like=elsewhere)
    values = flat(state)
    report["checkpoint"] = {
        "same_values": max_diff(flat(same), values) == 0.0,
        "same_mesh_shardings": all(a.sharding == b.sharding for a, b in zip(leaves(same), leaves(state))),
        "other_mesh_values": max_diff(flat(other), values) == 0.0,
        "other_mesh_shardings": all(a.sharding == b.sharding for a, b in zip(leaves(other), leaves(other_state))),
    }
    print(json.dumps(report, default=lambda x: x.item() if hasattr(x, "item") else str(x)))


if __name__ == "__main__":
    jax.config.update("jax_platforms", "cpu")
    main(Path(sys.argv[1]))

"""Scale-out: step time and per-device memory of the sharded VLM train steps, per mesh shape.

    python bench/bench_scale.py                       # CPU: 8 host-platform devices, embedded CLIP and PaliGemma
    python bench/bench_scale.py --3b --dtype bfloat16 --meshes data=1,fsdp=8   # + PaliGemma-3B shapes
    python bench/bench_scale.py --devices 0 --3b --dtype bfloat16 --peak-tflops 989   # GPU/TPU: the real devices

Configs: the embedded CLIP and PaliGemma learners (their fine-tuning steps through `finetune`, so the
minibatch gather is included), and a PaliGemma of paligemma-3b-pt-224 shapes with random weights whose
attention-only train step runs on the mesh directly (parameters initialised already sharded, frozen ones in
`--dtype`; no full copy on one device or on the host). Per-device memory: the state (parameters and
optimiser) on the busiest device, XLA's temporary buffers of the compiled step, and the accelerator's peak
where the backend reports it. On CPU, host-platform devices share the same cores: step times there show
that the sharded programs run, not how they scale. Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PALIGEMMA_3B = dict(
    vision=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                image_size=224, patch_size=14),
    text=dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8,
              num_key_value_heads=1, head_dim=256, vocab_size=257216),
    prompt=32, answer=32,
)


def _args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8,
                        help="CPU host-platform devices to fake (0: use the real devices, e.g. on GPU/TPU)")
    parser.add_argument("--meshes", default=None,
                        help="';'-separated mesh specs (default: data=D,fsdp=1 up to data=1,fsdp=D in powers of 2)")
    parser.add_argument("--3b", dest="b3", action="store_true", help="also PaliGemma-3B shapes, random weights")
    parser.add_argument("--no-embedded", action="store_true", help="skip the embedded CLIP/PaliGemma learners")
    parser.add_argument("--dtype", default="float32", help="3B: compute and frozen-parameter dtype")
    parser.add_argument("--batch", type=int, default=0, help="3B: global batch (default: 2 per device, at least 8)")
    parser.add_argument("--full-finetune", action="store_true", help="3B: train every parameter (default: attention)")
    parser.add_argument("--compile-only", action="store_true",
                        help="3B: compile the sharded step from abstract shapes and report its memory, no weights "
                             "and no timing (what a CPU can do at these shapes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="per-device dense peak in the compute dtype, for MFU (H100 SXM bf16: 989)")
    return parser.parse_args()


def _memory(compiled=None) -> dict:
    import jax

    out = {}
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak_gib"] = round(stats["peak_bytes_in_use"] / 2**30, 3)
    if compiled is not None:
        analysis = compiled.memory_analysis()
        if analysis is not None:
            out["step_temp_gib"] = round(analysis.temp_size_in_bytes / 2**30, 3)
    return out


def _timed(fn, repeats: int) -> float:
    fn()  # compile
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def bench_embedded(mesh, repeats: int) -> dict:
    import jax
    import numpy as np

    from rls3_jax import datasets, sharding
    from rls3_jax.vlm.clip.learner import ClipLearner
    from rls3_jax.vlm.paligemma.learner import PaliGemmaLearner

    out = {}
    n = max(16, sharding.batch_multiple(mesh))
    pali = PaliGemmaLearner.create(mesh=mesh, train_batch_size=n)
    images, samples = datasets.generate_fixed_set("train", n, pali.image_size, seed=0)
    state = pali.init_state(0)
    k = 4
    step_s = _timed(lambda: jax.block_until_ready(pali.finetune(state, images, samples, k, jax.random.PRNGKey(0))), repeats) / k
    out["paligemma"] = {"batch": n, "step_ms": round(step_s * 1e3, 2),
                        "state_mib_per_device": round(sharding.per_device_bytes(state) / 2**20, 2), **_memory()}
    clip = ClipLearner.create(mesh=mesh, batch_size=n)
    images, samples = datasets.generate_fixed_set("train", n, clip.image_size, seed=0)
    state = clip.init_state(0)
    step_s = _timed(lambda: jax.block_until_ready(clip.finetune(state, images, samples, k, jax.random.PRNGKey(0))), repeats) / k
    out["clip"] = {"batch": clip.batch_size, "step_ms": round(step_s * 1e3, 2),
                   "state_mib_per_device": round(sharding.per_device_bytes(state) / 2**20, 2)}
    del np
    return out


def bench_3b(mesh, args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax.traverse_util import flatten_dict

    from rls3_jax import sharding
    from rls3_jax.vlm.paligemma import model as paligemma
    from rls3_jax.vlm.paligemma import train as paligemma_train

    spec = PALIGEMMA_3B
    vocab = spec["text"]["vocab_size"]
    config = paligemma.PaliGemmaConfig(
        vision=paligemma.VisionConfig(**spec["vision"]), text=paligemma.TextConfig(**spec["text"]),
        image_token_index=vocab - 1, dtype=args.dtype)
    model = paligemma.PaliGemma(config)
    n_img = config.num_image_tokens
    batch = args.batch or max(8, 2 * sharding.batch_multiple(mesh))
    seq = n_img + spec["prompt"] + spec["answer"]

    def init():
        ids = jnp.zeros((1, n_img + 2), jnp.int32).at[:, :n_img].set(vocab - 1)
        pixels = jnp.zeros((1, 3, 224, 224), jnp.float32)
        return model.init(jax.random.key(0), ids, pixels)["params"]

    shapes = jax.eval_shape(init)
    labels = paligemma_train.param_labels(shapes, args.full_finetune)
    store = lambda x, label: x if label == "trainable" else x.astype(args.dtype)
    param_sh = sharding.param_sharding(mesh, shapes)
    make_params = jax.jit(lambda: jax.tree.map(store, init(), labels), out_shardings=param_sh)
    tx, _ = paligemma_train.make_optimizer(shapes, 1e-5, args.full_finetune)
    param_shapes = jax.eval_shape(make_params)
    opt_shapes = jax.eval_shape(tx.init, param_shapes)
    opt_sh = sharding.param_sharding(mesh, opt_shapes)
    batch_sh, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    step = paligemma_train.make_train_step(model, tx, labels, (param_sh, opt_sh, batch_sh, replicated))
    n_params = sum(int(np.prod(v.shape)) for v in flatten_dict(shapes).values())
    if args.compile_only:
        abstract = lambda t, sh: jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), t, sh)
        batch_shapes = {"input_ids": ((batch, seq), jnp.int32), "attention_mask": ((batch, seq), jnp.int32),
                        "token_type_ids": ((batch, seq), jnp.int32), "pixel_values": ((batch, 3, 224, 224), jnp.float32)}
        batch_abs = {k: jax.ShapeDtypeStruct(s, d, sharding=batch_sh) for k, (s, d) in batch_shapes.items()}
        started = time.perf_counter()
        compiled = step.lower(abstract(param_shapes, param_sh), abstract(opt_shapes, opt_sh), batch_abs).compile()
        state_bytes = sum(
            int(np.prod(sh.shard_shape(x.shape))) * x.dtype.itemsize
            for x, sh in zip(jax.tree.leaves((param_shapes, opt_shapes)), jax.tree.leaves((param_sh, opt_sh))))
        return {"batch": batch, "seq": seq, "params_b": round(n_params / 1e9, 3), "compile_s": round(time.perf_counter() - started, 1),
                "state_gib_per_device": round(state_bytes / 2**30, 3), **_memory(compiled)}
    params = make_params()
    opt = jax.jit(tx.init, out_shardings=opt_sh)(params)

    rng = np.random.default_rng(0)
    ids = np.concatenate([np.full((batch, n_img), vocab - 1), rng.integers(3, vocab - 2, (batch, seq - n_img))], 1)
    types = np.zeros_like(ids)
    types[:, n_img + spec["prompt"]:] = 1
    host = {"input_ids": ids.astype(np.int32), "attention_mask": np.ones_like(ids, np.int32),
            "token_type_ids": types.astype(np.int32),
            "pixel_values": rng.uniform(-1, 1, (batch, 3, 224, 224)).astype(np.float32)}
    data = sharding.put(host, batch_sh)
    compiled = step.lower(params, opt, data).compile()
    state = {"params": params, "opt": opt}

    def run():
        state["params"], state["opt"], loss = step(state["params"], state["opt"], data)
        loss.block_until_ready()

    step_s = _timed(run, args.repeats)
    out = {"batch": batch, "seq": seq, "params_b": round(n_params / 1e9, 3), "step_ms": round(step_s * 1e3, 1),
           "state_gib_per_device": round(sharding.per_device_bytes(state) / 2**30, 3), **_memory(compiled)}
    if args.peak_tflops and not args.full_finetune:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from paligemma import train_step_flops

        flops = train_step_flops(config, shapes, seq, batch)
        per_device = flops / step_s / mesh.devices.size
        out["tflops_per_device"] = round(per_device / 1e12, 1)
        out["mfu"] = round(per_device / (args.peak_tflops * 1e12), 3)
    return out


def main():
    args = _args()
    if args.devices:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    from rls3_jax import sharding

    d = jax.device_count()
    specs = args.meshes.split(";") if args.meshes else (
        ["data=1,fsdp=1"] + [f"data={d // f},fsdp={f}" for f in (1, 2, 4, 8, 16) if d % f == 0 and f <= d and d > 1])
    result = {"bench": "scale", "backend": jax.default_backend(), "devices": d,
              "device_kind": jax.devices()[0].device_kind, "meshes": {}}
    for spec in specs:
        sizes = {k.strip(): int(v) for k, v in (part.split("=") for part in spec.split(","))}
        count = sizes.get("data", 1) * sizes.get("fsdp", 1)  # explicit sizes; fewer than all: the first devices
        mesh = sharding.make_mesh(spec, devices=jax.devices()[:count])
        entry = {}
        if not args.no_embedded:
            entry.update(bench_embedded(mesh, args.repeats))
        if args.b3:
            try:
                entry["paligemma_3b"] = {"dtype": args.dtype, **bench_3b(mesh, args)}
            except Exception as err:  # out of memory: report it and go on with the next mesh
                entry["paligemma_3b"] = {"dtype": args.dtype, "error": f"{type(err).__name__}: {str(err)[:200]}"}
        result["meshes"][spec] = entry
        print(json.dumps({"mesh": spec, **entry}), file=sys.stderr)  # progress
    print(json.dumps(result))


if __name__ == "__main__":
    main()

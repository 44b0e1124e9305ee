"""Our jitted CLIP train step and embedding pass against transformers' PyTorch CLIPModel, side by side.

Same configuration, batch and optimiser (AdamW, global-norm clipping, symmetric contrastive loss) in both;
prints ONE JSON line with steps/s of each and the ratio (ours / transformers), and per size the train step's
bound (bench/machine.py): its FLOPs from XLA's cost analysis of our compiled step (`train_gflop`), the machine's
fp32 [256,256] matmul rate measured in the same run, in the JAX process (`matmul_gflop_per_s`), the step's time
at that rate (`train_bound_ms`) and the fraction of it our step and transformers' (same FLOPs) reach
(`train_bound_fraction`, `torch_train_bound_fraction`).

Each figure is the median of `--rounds` rounds alternating between the frameworks; both run with glibc's
huge-page tunable (rls3_jax.huge_pages) unless --no-huge-pages.

    python bench/clip_train_step.py                      # CPU: tiny, small and embedded-default configs, float32
    python bench/clip_train_step.py --device gpu --size b32 --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bench.machine import compiled_flops, matmul_flops_per_s, train_bound  # noqa: E402
from rls3_jax import huge_pages  # noqa: E402
from rls3_jax.vlm.clip import contrastive  # noqa: E402
from rls3_jax.vlm.clip import model as clip  # noqa: E402

SIZES = {
    # name: (text width, text layers, vision width, vision layers, heads, image, patch, text length, batch)
    "tiny": (64, 2, 64, 2, 4, 32, 8, 16, 16),
    "small": (128, 3, 128, 4, 4, 64, 8, 24, 32),
    # the shipped base's shapes (rls3_jax/assets/clip_base.json; the bench's 1000-word vocabulary for its 253)
    # at the default preset's batch
    "embedded": (96, 2, 96, 3, 4, 96, 12, 24, 32),
    "b32": (512, 12, 768, 12, 8, 224, 32, 32, 64),
}


def hf_config(size: str) -> dict:
    tw, tl, vw, vl, heads, image, patch, length, _ = SIZES[size]
    vision_heads = 12 if size == "b32" else heads
    return {
        "model_type": "clip",
        "projection_dim": 512 if size == "b32" else tw,
        "text_config": dict(
            vocab_size=49408 if size == "b32" else 1000,
            hidden_size=tw,
            intermediate_size=4 * tw,
            num_hidden_layers=tl,
            num_attention_heads=heads,
            max_position_embeddings=max(length, 77) if size == "b32" else length,
            eos_token_id=999 if size != "b32" else 49407,
        ),
        "vision_config": dict(
            hidden_size=vw,
            intermediate_size=4 * vw,
            num_hidden_layers=vl,
            num_attention_heads=vision_heads,
            image_size=image,
            patch_size=patch,
        ),
    }


def make_batch(size: str, seed: int = 0):
    _, _, _, _, _, image, _, length, batch = SIZES[size]
    rng = np.random.default_rng(seed)
    eos = 49407 if size == "b32" else 999
    ids = rng.integers(3, eos - 1, size=(batch, length)).astype(np.int32)
    ends = rng.integers(length // 2, length, size=batch)
    mask = (np.arange(length)[None] <= ends[:, None]).astype(np.int32)
    ids[np.arange(batch), ends] = eos
    ids = np.where(mask > 0, ids, 0)
    images = rng.integers(0, 256, size=(batch, image, image, 3), dtype=np.uint8)
    return images, ids, mask


def timed(fn, seconds: float, min_iters: int = 3) -> float:
    """Calls per second of fn (which blocks until its result is ready), after one warm-up call."""
    fn()
    n, start = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def bench_jax(size, dtype, seconds):
    config = clip.CLIPConfig.from_hf_config(hf_config(size))
    model = clip.CLIPModel(config, dtype=dtype)
    optimizer = contrastive.make_optimizer(contrastive.TrainConfig(learning_rate=1e-4, warmup_steps=1))
    holder = {"state": contrastive.init_train_state(clip.init_params(config, 0), optimizer)}
    step = contrastive.make_train_step(model, optimizer)
    images, ids, mask = make_batch(size)
    batch = jax.device_put(
        {"images": images, "input_ids": ids, "attention_mask": mask, "valid": np.ones(len(images), bool)}
    )

    def train():
        holder["state"], metrics = step(holder["state"], batch)
        jax.block_until_ready(metrics["loss"])

    @jax.jit
    def embed(params, images, ids, mask):
        out = model.apply(
            {"params": params},
            input_ids=ids,
            attention_mask=mask,
            pixel_values=contrastive.to_pixel_values(images, dtype=dtype),
        )
        return out.image_embeds, out.text_embeds

    def forward():
        jax.block_until_ready(
            embed(holder["state"]["params"], batch["images"], batch["input_ids"], batch["attention_mask"])
        )

    train_per_s, embed_per_s = timed(train, seconds), timed(forward, seconds)
    flops = compiled_flops(step, holder["state"], batch)
    return train_per_s, embed_per_s, flops, matmul_flops_per_s()


def bench_torch(size, device, dtype, seconds):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.CLIPConfig(**{k: v for k, v in hf_config(size).items() if k != "model_type"})
    model = transformers.CLIPModel(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    images, ids, mask = make_batch(size)
    mean = torch.tensor(contrastive.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(contrastive.CLIP_STD).view(1, 3, 1, 1)
    pixels = ((torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std).to(device)
    ids_t, mask_t = torch.from_numpy(ids).long().to(device), torch.from_numpy(mask).long().to(device)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bf16")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def train():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = model(input_ids=ids_t, attention_mask=mask_t, pixel_values=pixels, return_loss=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        out.loss.item()
        sync()

    def forward():
        with torch.no_grad(), autocast:
            out = model(input_ids=ids_t, attention_mask=mask_t, pixel_values=pixels)
        out.image_embeds.float().sum().item()
        sync()

    return timed(train, seconds), timed(forward, seconds)


def run_one(framework: str, args) -> dict:
    """Measurements of one framework in this process: {size: (train steps/s, embed passes/s)}, for JAX also
    the train step's FLOPs and the machine's matmul FLOP/s."""
    out = {}
    for size in args.size:
        if framework == "jax":
            if args.device == "gpu" and jax.default_backend() != "gpu":
                raise SystemExit("--device gpu: JAX sees no GPU (install jax[cuda12])")
            dtype = jnp.bfloat16 if args.dtype == "bf16" else jnp.float32
            out[size] = bench_jax(size, dtype, args.seconds)
        else:
            out[size] = bench_torch(size, "cuda" if args.device == "gpu" else "cpu", args.dtype, args.seconds)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--size", action="append", choices=sorted(SIZES), help="repeatable; default tiny, small, embedded"
    )
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--seconds", type=float, default=5.0, help="timing window per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both frameworks; medians reported")
    parser.add_argument("--no-huge-pages", action="store_true", help="leave glibc's allocator as it is (see rls3_jax.huge_pages)")
    parser.add_argument("--only", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.size = args.size or ["tiny", "small", "embedded"]
    if args.only:
        print(json.dumps(run_one(args.only, args)))
        return
    # Each framework in its own process: their CPU thread pools would otherwise fight over the cores. Rounds
    # alternate between them, so a slow spell of a shared machine falls on both alike; both get the same
    # allocator setting.
    env = os.environ.copy() if args.no_huge_pages else huge_pages.environment()
    rounds = {"jax": [], "torch": []}
    for framework in ("jax", "torch") * args.rounds:
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--only",
            framework,
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--seconds",
            str(args.seconds),
        ]
        for size in args.size:
            cmd += ["--size", size]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        rounds[framework].append(json.loads(done.stdout.strip().splitlines()[-1]))
    # per size and quantity, the median over rounds
    measured = {fw: {size: [float(np.median([r[size][i] for r in rs])) for i in range(len(rs[0][size]))]
                     for size in args.size} for fw, rs in rounds.items()}
    results = {}
    for size in args.size:
        jax_train, jax_embed, flops, rate = measured["jax"][size]
        torch_train, torch_embed = measured["torch"][size]
        results[size] = {
            "batch": SIZES[size][-1],
            "jax_train_steps_per_s": round(jax_train, 3),
            "torch_train_steps_per_s": round(torch_train, 3),
            "train_ratio": round(jax_train / torch_train, 3),
            "jax_embed_per_s": round(jax_embed, 3),
            "torch_embed_per_s": round(torch_embed, 3),
            "embed_ratio": round(jax_embed / torch_embed, 3),
            **train_bound(flops, rate, 1 / jax_train, 1 / torch_train),
        }
    import torch

    print(
        json.dumps(
            {
                "bench": "clip_train_step",
                "device": args.device,
                "dtype": args.dtype,
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "machine": platform.machine(),
                "jax": jax.__version__,
                "torch": torch.__version__,
                "huge_pages": huge_pages.active(env),
                "rounds": args.rounds,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()

"""PaliGemma: our jitted train step and cached greedy decoding against transformers' PyTorch PaliGemma.

    python bench/paligemma.py                 # CPU: tiny, small and embedded-default configs, fp32 (goal: ratios >= 1.5)
    python bench/paligemma.py --gpu3b         # accelerator: paligemma-3b-pt-224 shapes, random weights, bf16,
                                              # plus the model FLOPs utilisation of our train step (goal >= 40%)

Both sides run the same random weights on the same inputs: the train step fine-tunes the language model's
attention layers on the answer tokens (AdamW), decoding generates a fixed number of tokens per sequence
(transformers' generate() with its cache, greedy; ours with EOS disabled). Per config, the train step's bound
(bench/machine.py): its FLOPs from XLA's cost analysis of our compiled step (`train_gflop`), the machine's fp32
[256,256] matmul rate measured in the same run (`matmul_gflop_per_s`), the step's time at that rate
(`train_bound_ms`) and the fraction of it our step and transformers' (same FLOPs) reach
(`train_bound_fraction`, `torch_train_bound_fraction`; our step computes logits only where an answer token
is predicted, transformers' at every position, so its FLOPs are a floor for transformers'). Each figure is
the median of `--windows` windows that alternate between the two sides. The process re-executes itself once
with glibc's huge-page tunable (rls3_jax.huge_pages), which both frameworks share. Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")  # leave the accelerator room for torch

import numpy as np  # noqa: E402

from bench.machine import compiled_flops, matmul_flops_per_s, train_bound  # noqa: E402
from rls3_jax import huge_pages  # noqa: E402

CPU_CONFIGS = {
    "tiny": dict(
        vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8),
        text=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=16, vocab_size=512),
        batch=8, prompt=16, answer=12, new_tokens=16,
    ),
    "small": dict(
        vision=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, image_size=64, patch_size=8),
        text=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=32, vocab_size=2048),
        batch=16, prompt=20, answer=16, new_tokens=20,
    ),
    # the base shipped until the night of 2026-12-07 (128 px, 16 px patches) at the default preset's fine-tuning
    # batch, with the loop's sequence length (64 image tokens + 32 text slots). The shipped base since merges 2 x 2
    # of its 8 px patches into each image token, which transformers' PaliGemma cannot express, so it has no
    # side-by-side row; this one stays the nearest shape both frameworks run.
    "embedded": dict(
        vision=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4, image_size=128, patch_size=16),
        text=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1, head_dim=32, vocab_size=1068),
        batch=16, prompt=16, answer=16, new_tokens=16,
    ),
}
PALIGEMMA_3B = dict(
    vision=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, image_size=224, patch_size=14),
    text=dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1, head_dim=256, vocab_size=257216),
    batch=8, prompt=32, answer=32, new_tokens=32,
)


def _hf_model(spec, dtype, device):
    import torch
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    torch.manual_seed(0)
    vocab = spec["text"]["vocab_size"]
    config = PaliGemmaConfig(
        vision_config=dict(spec["vision"], vision_use_head=False), text_config=spec["text"],
        image_token_index=vocab - 1, projection_dim=spec["text"]["hidden_size"], vocab_size=vocab,
    )
    return PaliGemmaForConditionalGeneration(config).to(dtype=dtype, device=device).eval()


def _inputs(spec, n_img, vocab, rng):
    b, p, a = spec["batch"], spec["prompt"], spec["answer"]
    ids = np.concatenate([np.full((b, n_img), vocab - 1), rng.integers(3, vocab - 2, (b, p + a))], axis=1)
    types = np.zeros_like(ids)
    types[:, n_img + p :] = 1
    size = spec["vision"]["image_size"]
    pixels = rng.uniform(-1, 1, (b, 3, size, size)).astype(np.float32)
    return ids.astype(np.int32), types.astype(np.int32), pixels


def _time_side_by_side(ours, theirs, repeats, windows):
    """Median seconds per call of each, over `windows` alternating windows of `repeats` calls (after two
    warm-up calls each): a slow spell of a shared machine then falls on both sides alike."""
    for fn in (ours, theirs, ours, theirs):
        fn()
    times = ([], [])
    for _ in range(windows):
        for fn, out in zip((ours, theirs), times):
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            out.append((time.perf_counter() - start) / repeats)
    return float(np.median(times[0])), float(np.median(times[1]))


def run_config(name, spec, device, torch_dtype, jax_dtype, repeats, windows):
    import jax
    import jax.numpy as jnp
    import torch

    from rls3_jax.vlm.paligemma import decode
    from rls3_jax.vlm.paligemma import model as paligemma
    from rls3_jax.vlm.paligemma import train as paligemma_train
    from rls3_jax.vlm.paligemma.weights import from_pretrained

    rng = np.random.default_rng(0)
    torch_model = _hf_model(spec, torch_dtype, device)
    with tempfile.TemporaryDirectory() as tmp:
        if device == "cpu":  # load the very same weights
            torch_model.save_pretrained(tmp)
            model, params = from_pretrained(tmp, dtype=jax_dtype)
        else:  # 3B: no round trip through disk, our own random init of the same shapes
            cfg = paligemma.PaliGemmaConfig.from_hf_config(torch_model.config.to_dict()).replace(dtype=jax_dtype)
            model, params = paligemma.init_params(cfg, 0)
    vocab = spec["text"]["vocab_size"]
    n_img = model.config.num_image_tokens
    ids, types, pixels = _inputs(spec, n_img, vocab, rng)
    mask = np.ones_like(ids)

    # ---- train step (attention-only, answer-token loss, AdamW)
    tx, labels = paligemma_train.make_optimizer(params, 1e-5)
    step = paligemma_train.make_train_step(model, tx, labels)
    state = {"params": params, "opt": tx.init(params)}
    batch = {k: jnp.asarray(v) for k, v in dict(input_ids=ids, attention_mask=mask, token_type_ids=types, pixel_values=pixels).items()}

    def ours_train():
        state["params"], state["opt"], loss = step(state["params"], state["opt"], batch)
        loss.block_until_ready()

    for n, p in torch_model.named_parameters():
        p.requires_grad_("language_model" in n and "self_attn" in n)
    opt = torch.optim.AdamW([p for p in torch_model.parameters() if p.requires_grad], lr=1e-5)
    t_batch = {
        "input_ids": torch.tensor(ids, dtype=torch.long, device=device),
        "attention_mask": torch.tensor(mask, device=device),
        "token_type_ids": torch.tensor(types, device=device),
        "pixel_values": torch.tensor(pixels, dtype=torch_dtype, device=device),
    }
    labels_t = t_batch["input_ids"].masked_fill(t_batch["token_type_ids"] == 0, -100)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def torch_train():
        torch_model.train()
        loss = torch_model(**t_batch, labels=labels_t).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()

    train_ours, train_torch = _time_side_by_side(ours_train, torch_train, repeats, windows)
    flops = compiled_flops(step, state["params"], state["opt"], batch)
    rate = matmul_flops_per_s()

    # ---- batched greedy decoding of new_tokens tokens per sequence
    new = spec["new_tokens"]
    prefix = n_img + spec["prompt"]
    decoder = decode.make_greedy_decoder(model, new, eos_id=-1, pad_id=0)
    p_ids, p_mask, p_px = jnp.asarray(ids[:, :prefix]), jnp.asarray(mask[:, :prefix]), jnp.asarray(pixels)

    def ours_decode():
        jax.block_until_ready(decoder(state["params"], p_ids, p_px, p_mask))

    torch_model.eval()
    gen_inputs = {k: v[:, :prefix] if k != "pixel_values" else v for k, v in t_batch.items()}
    gen_inputs["token_type_ids"] = torch.zeros_like(gen_inputs["token_type_ids"])

    def torch_decode():
        with torch.no_grad():
            out = torch_model.generate(**gen_inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        assert out.shape[1] == prefix + new
        sync()

    dec_ours, dec_torch = _time_side_by_side(ours_decode, torch_decode, repeats, windows)
    tokens = spec["batch"] * new
    result = {
        "train_step_ms": round(train_ours * 1e3, 2),
        "torch_train_step_ms": round(train_torch * 1e3, 2),
        "train_speedup": round(train_torch / train_ours, 2),
        "decode_tokens_per_s": round(tokens / dec_ours, 1),
        "torch_decode_tokens_per_s": round(tokens / dec_torch, 1),
        "decode_speedup": round(dec_torch / dec_ours, 2),
        **train_bound(flops, rate, train_ours, train_torch),
    }
    return result, model.config, params, ids.shape[1], train_ours


def train_step_flops(config, params, seq: int, batch: int) -> float:
    """Model FLOPs of one attention-only train step: forward everywhere (vision on the image tokens, Gemma on
    the sequence, output layer included), backward through Gemma's activations, weight gradients of its
    attention projections only; attention score/value products included. Matmul FLOPs = 2 * multiply-adds."""
    from flax.traverse_util import flatten_dict

    flat = flatten_dict(params)
    size = lambda pred: sum(int(np.prod(v.shape)) for p, v in flat.items() if pred(p))
    vision = size(lambda p: p[0] in ("vision_tower", "multi_modal_projector"))
    llm = size(lambda p: p[0] == "language_model")  # includes the tied embedding (used as the output layer)
    attn = size(lambda p: p[0] == "language_model" and "self_attn" in p)
    v, t = config.vision, config.text
    n_img = config.num_image_tokens
    att_vis = 4 * v.num_hidden_layers * n_img * n_img * v.hidden_size
    att_llm = 4 * t.num_hidden_layers * seq * seq * t.num_attention_heads * t.head_dim
    forward = 2 * vision * n_img + att_vis + 2 * llm * seq + att_llm
    backward = 2 * llm * seq + 2 * att_llm + 2 * attn * seq
    return batch * (forward + backward)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu3b", action="store_true", help="accelerator run on paligemma-3b shapes in bf16")
    parser.add_argument("--repeats", type=int, default=5, help="calls per timing window")
    parser.add_argument("--windows", type=int, default=3, help="alternating windows per side; medians reported")
    parser.add_argument("--no-huge-pages", action="store_true", help="leave glibc's allocator as it is (see rls3_jax.huge_pages)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="accelerator bf16 dense peak (H100 SXM: 989)")
    args = parser.parse_args()
    if not args.no_huge_pages:
        huge_pages.reexec([sys.executable, *sys.argv])  # both frameworks in this process get the same allocator
    import jax
    import torch

    out = {"bench": "paligemma", "backend": jax.default_backend(), "torch": torch.__version__,
           "huge_pages": huge_pages.active(), "windows": args.windows, "repeats": args.repeats}
    if args.gpu3b:
        if not torch.cuda.is_available() or jax.default_backend() == "cpu":
            raise SystemExit("--gpu3b needs an accelerator visible to both JAX and torch")
        result, config, params, seq, step_s = run_config("3b", PALIGEMMA_3B, "cuda", torch.bfloat16, "bfloat16", args.repeats, args.windows)
        flops = train_step_flops(config, params, seq, PALIGEMMA_3B["batch"])
        result["train_step_tflops"] = round(flops / step_s / 1e12, 1)
        result["mfu"] = round(flops / step_s / (args.peak_tflops * 1e12), 3)
        out["configs"] = {"paligemma-3b-224": result}
    else:
        out["configs"] = {}
        for name, spec in CPU_CONFIGS.items():
            out["configs"][name] = run_config(name, spec, "cpu", torch.float32, "float32", args.repeats, args.windows)[0]
        out["min_train_speedup"] = min(r["train_speedup"] for r in out["configs"].values())
        out["min_decode_speedup"] = min(r["decode_speedup"] for r in out["configs"].values())
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Run a few episodes with random actions and write every valid sample as a PNG plus its caption.

    python -m sim.demo --out DIR --episodes 3 [--split train] [--steps 40] [--image-size 224] [--seed 0]

DIR receives sample_XXXX.png and index.jsonl (one line per image: file, caption, question, metadata).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image

from rls3_jax.prompts import describe_pair
from sim.env import IndoorSceneEnv


def run(
    out: str, episodes: int = 3, split: str = "train", steps: int = 40, image_size: int = 224, seed: int = 0
):
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = IndoorSceneEnv(split=split, image_size=image_size, render_mode="rgb_array", max_episode_steps=steps)
    env.action_space.seed(seed)
    pick = random.Random(seed)
    n = 0
    with open(out_dir / "index.jsonl", "w") as index:
        for episode in range(episodes):
            env.reset(seed=seed if episode == 0 else None)
            truncated = False
            while not truncated:
                _, _, _, truncated, info = env.step(env.action_space.sample())
                if not info["valid"]:
                    continue
                md = info["metadata"]
                located, reference = pick.sample(range(3), 2)
                pair = describe_pair(md, located, reference)
                name = f"sample_{n:04d}.png"
                Image.fromarray(env.render()).save(out_dir / name)
                record = {
                    "file": name,
                    "episode": episode,
                    "caption": pair["caption"],
                    "question": pair["question"],
                    "terms": list(pair["terms"]),
                    "metadata": md,
                }
                index.write(json.dumps(record) + "\n")
                n += 1
    return n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--split", default="train", choices=["train", "val", "test"])
    parser.add_argument("--steps", type=int, default=40, help="steps per episode")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n = run(args.out, args.episodes, args.split, args.steps, args.image_size, args.seed)
    print(f"wrote {n} samples to {args.out}")


if __name__ == "__main__":
    main()

"""Simulator speed on one core: env steps/s (random actions, no rendering) and 224x224 frames/s.

Prints one JSON line. Goals: >= 20,000 steps/s and >= 500 frames/s.
"""

import json
import time

import numpy as np

import sim


def main():
    env = sim.IndoorSceneEnv(split="train", max_episode_steps=200)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (50_000, 3)).astype(np.float32)
    valid = 0
    t = time.perf_counter()
    for a in actions:
        _, r, _, trunc, _ = env.step(a)
        valid += r > 0
        if trunc:
            env.reset()
    steps_per_s = len(actions) / (time.perf_counter() - t)

    frames = 0
    for scene in range(len(env.scenes)):  # build every scene's cached background first
        env.reset(options={"scene": scene})
        env.render()
    t = time.perf_counter()
    while frames < 1000:
        env.step(actions[frames])
        env.render()
        frames += 1
        if frames % 100 == 0:
            env.reset()
    frames_per_s = frames / (time.perf_counter() - t)

    t = time.perf_counter()
    sim.generate_samples("test", 200, seed=0)
    samples_per_s = 200 / (time.perf_counter() - t)
    print(
        json.dumps(
            {
                "steps_per_s": round(steps_per_s),
                "frames_per_s": round(frames_per_s, 1),
                "generate_samples_per_s": round(samples_per_s, 1),
                "random_valid_fraction": round(valid / len(actions), 3),
                "image_size": 224,
            }
        )
    )


if __name__ == "__main__":
    main()

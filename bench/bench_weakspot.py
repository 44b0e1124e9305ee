"""Does the agent learn to generate what the VLM gets wrong? SAC vs random against the scripted weak-spot VLM.

For each weak-term set and seed: a SAC run of `--iterations` iterations (early stopping off: the scripted VLM never
improves, so the default patience would end the run at iteration 4), then a random run with the SAC run's number
of generated samples as its budget (`--budget-from`). The weak-spot VLM's fine-tuning loss is the fraction of the
batch it gets wrong, i.e. the share of weak-term samples in the batch, so each record's `train_loss` is that
iteration's share. Beside both agents, a greedy one-step oracle that knows the simulator's rules and the weak
terms (it tries `--oracle-candidates` random moves of the selected object and makes the valid one whose scene
holds the most weak-term pairs, or with `--caption-subject moved` whose described pair holds a weak term) gives
the share a myopic perfect agent reaches in the training scenes. Prints one JSON line per term set.

    python bench/bench_weakspot.py [--term-sets above,below above] [--seeds 0 1 2] [--action surface]
        [--observation slots] [--caption-subject random] [--out bench_runs/weakspot]
        [-- further rls3_jax.main flags]

With no flags it runs the weak-spot preset (its agent side, the one that seeks the weak spot: docs/sac.md);
`--action displacement --observation slots -- --reward batch --pretraining-buffer keep ...` goes back to the
paper's.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from bench_loop import resume, run_main  # the sibling bench: one run of rls3_jax.main, resumed when begun

from rls3_jax.config import ACTIONS, CAPTION_SUBJECTS, OBSERVATIONS, RunConfig
from rls3_jax.datasets import describe
from rls3_jax.prompts import spatial_terms


def run_figures(out: Path) -> dict:
    """Weak-term share of the fine-tuning data and valid-move fraction of one run directory."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    sizes, shares = [], []
    for before, after in zip(records, records[1:]):
        size = sum(after["finetune_complexity_counts"].values()) - sum(before["finetune_complexity_counts"].values())
        sizes.append(size)
        shares.append(after["train_loss"])
    last = records[-1]
    return {"share": float(np.average(shares, weights=sizes)), "valid_fraction": last["generated_samples"] / last["env_steps"],
            "finetune_samples": int(sum(sizes)), "iterations": last["iteration"]}


def oracle_share(weak: set[str], episodes: int, t0: int, candidates: int, seed: int, move: str,
                 subject: str = "random") -> dict:
    """The greedy one-step oracle's weak-term share (one pair per valid move, drawn as the loop draws it)."""
    import sim
    from sim import geometry

    env = sim.IndoorSceneEnv(split="train", image_size=64, move=move)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    hits, valid, steps = 0, 0, 0
    for _ in range(episodes):
        got = 0
        while got < t0:
            geo = env.geometry_state()
            forward = env.sample_metadata()["camera"]["forward"]
            best, action = -1.0, rng.uniform(-1, 1, 3)
            for a in rng.uniform(-1, 1, (candidates, 3)):
                new, _, ok = geometry.target(geo, int(geo["selected"]), a, move=move)
                if ok:
                    k = int(geo["selected"])
                    pos = geo["object_pos"].copy()
                    pos[k] = new
                    # the pairs the loop may describe after this move (rls3_jax.datasets.describe)
                    pairs = [(k, (k + 1) % len(pos))] if subject == "moved" else itertools.permutations(range(len(pos)), 2)
                    score = np.mean([bool(weak & set(spatial_terms(pos[i], pos[j], forward))) for i, j in pairs])
                    if score > best:
                        best, action = score, a
            _, _, _, _, info = env.step(action.astype(np.float32))
            steps += 1
            if info["valid"]:
                got += 1
                hits += bool(weak & set(describe(info["metadata"], rng, subject)["terms"]))
        valid += got
        env.reset()
    return {"share": hits / valid, "valid_fraction": valid / steps}


def summarise(group: list[dict]) -> dict:
    shares = [r["share"] for r in group]
    return {"share": float(np.mean(shares)), "share_std": float(np.std(shares)), "shares": shares,
            "valid_fraction": float(np.mean([r["valid_fraction"] for r in group])),
            "valid_fractions": [r["valid_fraction"] for r in group],
            "finetune_samples": float(np.mean([r["finetune_samples"] for r in group]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--term-sets", nargs="+", default=["above,below", "above"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--oracle-episodes", type=int, default=10, help="per seed")
    parser.add_argument("--oracle-candidates", type=int, default=64)
    parser.add_argument("--action", default="auto", choices=ACTIONS,
                        help="rls3_jax.main's --action, for both agents and the oracle")
    parser.add_argument("--observation", default="auto", choices=OBSERVATIONS,
                        help="rls3_jax.main's --observation, for both agents")
    parser.add_argument("--caption-subject", default="auto", choices=CAPTION_SUBJECTS,
                        help="rls3_jax.main's --caption-subject, for both agents and the oracle")
    parser.add_argument("--out", default="bench_runs/weakspot")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="further flags for rls3_jax.main (after --)")
    args = parser.parse_args()
    extra = [a for a in args.extra if a != "--"]
    for terms in args.term_sets:
        runs = {"sac": [], "random": []}
        for seed in args.seeds:
            tag = terms.replace(",", "+").replace(" ", "_")
            sac_dir, rnd_dir = Path(args.out) / f"{tag}-sac-{seed}", Path(args.out) / f"{tag}-random-{seed}"
            common = ["--vlm", "weakspot", "--weak-terms", terms, "--seed", str(seed), "--action", args.action,
                      "--observation", args.observation, "--caption-subject", args.caption_subject]
            run_main(*common, "--agent", "sac", "--iterations", str(args.iterations), "--min-iterations",
                     str(args.iterations), "--out", str(sac_dir), *resume(sac_dir), *extra)
            run_main(*common, "--agent", "random", "--budget-from", str(sac_dir), "--out", str(rnd_dir),
                     *resume(rnd_dir), *extra)
            runs["sac"].append(run_figures(sac_dir))
            runs["random"].append(run_figures(rnd_dir))
        sac, rnd = summarise(runs["sac"]), summarise(runs["random"])
        resolved = RunConfig(action=args.action, observation=args.observation, caption_subject=args.caption_subject)
        move, subject = resolved.move, resolved.described_pair
        oracles = [oracle_share(set(terms.split(",")), args.oracle_episodes, 32, args.oracle_candidates, seed, move,
                                subject) for seed in args.seeds]
        oracle = {key: float(np.mean([o[key] for o in oracles])) for key in ("share", "valid_fraction")}
        line = {"weak_terms": terms, "action": move, "observation": resolved.observation_order,
                "caption_subject": subject, "seeds": args.seeds, "iterations": args.iterations, "extra": extra,
                "sac": sac, "random": rnd, "share_ratio": sac["share"] / max(rnd["share"], 1e-9),
                "greedy_oracle": oracle,
                "goal_met": sac["share"] >= 2 * rnd["share"] and sac["valid_fraction"] >= rnd["valid_fraction"]}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

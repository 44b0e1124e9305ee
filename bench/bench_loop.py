"""The paper's claim on the stand-in: SAC-chosen data vs random data for the same sample budget.

For each VLM: SAC runs for several seeds, then random runs with each SAC run's generated-sample count as their
budget (`--budget-from`). Prints one JSON line per VLM with the test metric before and after and the area
under the test-metric-vs-generated-samples curve for both agents (mean and std over seeds), and the image-blind
baseline of the validation and test sets (rls3_jax.blind) to read them against.

    python bench/bench_loop.py [--vlms paligemma clip] [--seeds 0 1 2] [--preset default] [--out bench_runs]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from rls3_jax.report import area_under_curve, blind_metric, draw, load_run


def run_main(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "rls3_jax.main", *args], check=True)


def resume(out: Path) -> list[str]:
    return ["--resume"] if (out / "run.json").is_file() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vlms", nargs="+", default=["paligemma", "clip"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--out", default="bench_runs")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="further flags for rls3_jax.main (after --)")
    args = parser.parse_args()
    extra = [a for a in args.extra if a != "--"]
    for vlm in args.vlms:
        runs = {"sac": [], "random": []}
        for seed in args.seeds:
            sac_dir = Path(args.out) / f"{vlm}-sac-{seed}"
            rnd_dir = Path(args.out) / f"{vlm}-random-{seed}"
            # A directory from an earlier, perhaps killed, bench run is resumed (a finished run returns at once).
            run_main("--vlm", vlm, "--agent", "sac", "--preset", args.preset, "--seed", str(seed),
                     "--out", str(sac_dir), *resume(sac_dir), *extra)
            run_main("--vlm", vlm, "--agent", "random", "--preset", args.preset, "--seed", str(seed),
                     "--out", str(rnd_dir), "--budget-from", str(sac_dir), *resume(rnd_dir), *extra)
            runs["sac"].append(load_run(sac_dir))
            runs["random"].append(load_run(rnd_dir))
        draw(runs["sac"] + runs["random"], Path(args.out) / f"report-{vlm}")
        line = {"vlm": vlm, "preset": args.preset, "seeds": args.seeds,
                # what a model that never sees the image scores on the same sets (None: runs from before it)
                "val_blind": blind_metric(runs["sac"] + runs["random"], "val_blind_metric"),
                "test_blind": blind_metric(runs["sac"] + runs["random"], "test_blind_metric")}
        for agent, group in runs.items():
            before = [r["records"][0]["test_metric"] for r in group]
            after = [r["records"][-1]["test_metric"] for r in group]
            auc = [area_under_curve(r) for r in group]
            samples = [r["records"][-1]["generated_samples"] for r in group]
            line[agent] = {
                "test_before": float(np.mean(before)), "test_after": float(np.mean(after)),
                "test_after_std": float(np.std(after)), "auc": float(np.mean(auc)), "auc_std": float(np.std(auc)),
                "generated_samples": float(np.mean(samples)),
                "iterations": float(np.mean([r["records"][-1]["iteration"] for r in group])),
            }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

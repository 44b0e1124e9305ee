"""The paper's claim on the stand-in: SAC-chosen data vs random data, at two budgets, with bootstrap intervals.

For each VLM and seed: a SAC run, then two random runs with the SAC run's budget (`--budget-from`): (a) the
paper's, as many moves as SAC made, invalid ones included (`--budget-unit moves`: random's invalid moves cost it
data), and (b) as many generated samples (`--budget-unit samples`: the same amount of fine-tuning data). Prints
one JSON line per VLM: per agent the test metric before and after and the area under the test-metric-vs-generated
-samples curve, each as the mean over seeds with a bootstrap 95% interval of that mean; SAC minus random paired
by seed, with its interval; the final per-term test scores and the term counts of each agent's fine-tuning data
(Fig. 6); and the image-blind baseline of the validation and test sets (rls3_jax.blind) to read them against.

    python bench/bench_loop.py [--vlms paligemma clip] [--seeds 0 1 2 3 4] [--preset default] [--out bench_runs]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from rls3_jax.report import area_under_curve, blind_metric, draw, load_run

GROUPS = {"sac": None, "random_same_moves": "moves", "random_same_samples": "samples"}  # group -> budget unit


def run_main(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "rls3_jax.main", *args], check=True)


def resume(out: Path) -> list[str]:
    return ["--resume"] if (out / "run.json").is_file() else []


def run_dir(out: str, vlm: str, group: str, seed: int) -> Path:
    name = {"sac": "sac", "random_same_samples": "random", "random_same_moves": "random-moves"}[group]
    return Path(out) / f"{vlm}-{name}-{seed}"


def bootstrap_ci(values, resamples: int = 10_000, seed: int = 0) -> list[float]:
    """95% percentile interval of the mean of `values` (resampling the seeds with replacement)."""
    values = np.asarray(values, float)
    if len(values) < 2:
        return [float(values.mean()), float(values.mean())]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def with_ci(values) -> dict:
    return {"mean": float(np.mean(values)), "ci95": bootstrap_ci(values), "per_seed": [float(v) for v in values]}


def mean_dicts(dicts: list[dict]) -> dict:
    keys = sorted({k for d in dicts for k in d})
    return {k: float(np.mean([d.get(k, 0.0) for d in dicts])) for k in keys}


def summarise(group: list[dict]) -> dict:
    last = [r["records"][-1] for r in group]
    return {
        "test_before": float(np.mean([r["records"][0]["test_metric"] for r in group])),
        "test_after": with_ci([x["test_metric"] for x in last]),
        "auc": with_ci([area_under_curve(r) for r in group]),
        "generated_samples": float(np.mean([x["generated_samples"] for x in last])),
        "env_steps": float(np.mean([x["env_steps"] for x in last])),
        "valid_fraction": float(np.mean([x["generated_samples"] / max(1, x["env_steps"]) for x in last])),
        "iterations": float(np.mean([x["iteration"] for x in last])),
        "test_per_term": mean_dicts([x["test_per_term"] for x in last]),
        "finetune_term_counts": mean_dicts([x["finetune_term_counts"] for x in last]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vlms", nargs="+", default=["paligemma", "clip"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--out", default="bench_runs")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="further flags for rls3_jax.main (after --)")
    args = parser.parse_args()
    extra = [a for a in args.extra if a != "--"]
    for vlm in args.vlms:
        runs = {group: [] for group in GROUPS}
        for seed in args.seeds:
            common = ["--vlm", vlm, "--preset", args.preset, "--seed", str(seed), *extra]
            sac_dir = run_dir(args.out, vlm, "sac", seed)
            # A directory from an earlier, perhaps killed, bench run is resumed (a finished run returns at once).
            run_main(*common, "--agent", "sac", "--out", str(sac_dir), *resume(sac_dir))
            for group, unit in GROUPS.items():
                out = run_dir(args.out, vlm, group, seed)
                if unit is not None:
                    run_main(*common, "--agent", "random", "--budget-from", str(sac_dir), "--budget-unit", unit,
                             "--out", str(out), *resume(out))
                runs[group].append(load_run(out))
        draw(runs["sac"] + runs["random_same_samples"], Path(args.out) / f"report-{vlm}")
        every = [r for group in runs.values() for r in group]
        line = {"vlm": vlm, "preset": args.preset, "seeds": args.seeds, "extra": extra,
                # what a model that never sees the image scores on the same sets (None: runs from before it)
                "val_blind": blind_metric(every, "val_blind_metric"), "test_blind": blind_metric(every, "test_blind_metric")}
        line.update({group: summarise(group_runs) for group, group_runs in runs.items()})
        for group in ("random_same_moves", "random_same_samples"):
            line[f"sac_minus_{group}"] = {
                metric: with_ci([a - b for a, b in zip(line["sac"][metric]["per_seed"], line[group][metric]["per_seed"])])
                for metric in ("test_after", "auc")}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

"""`python -m rls3_jax.report RUN_DIR [RUN_DIR ...]`: the paper's figures from one or more runs.

Runs are grouped by agent (SAC / random) and VLM, so several seeds give mean and std bands.
Writes fig5_score_vs_data.png, fig6_per_term.png, fig7_complexity.png, fig8_finetune_loss.png,
fig9_validation.png and summary.md into --out (default: the first run directory's `report/`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from rls3_jax.config import RUBRIC_VLMS

TERMS = ("above", "below", "behind", "in front", "left", "right")


def load_run(directory: str | Path) -> dict:
    directory = Path(directory)
    metrics, run = directory / "metrics.jsonl", directory / "run.json"
    if not metrics.is_file() or not run.is_file():
        raise FileNotFoundError(f"{directory} is not a run directory (metrics.jsonl and run.json are needed)")
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not records:
        raise ValueError(f"{metrics} holds no iteration")
    return {"dir": directory, "config": json.loads(run.read_text())["config"], "records": records}


def _label(run: dict) -> str:
    return f"{run['config']['agent'].upper() if run['config']['agent'] == 'sac' else 'Random'} / {run['config']['vlm']}"


def _metric_name(vlm: str) -> str:
    return "mean rubric score" if vlm in RUBRIC_VLMS else "accuracy"


def _curve_on_grid(runs: list[dict], grid: np.ndarray) -> np.ndarray:
    """Test metric of each run against cumulative generated samples, held constant between iterations."""
    curves = []
    for run in runs:
        x = np.array([r["generated_samples"] for r in run["records"]], float)
        y = np.array([r["test_metric"] for r in run["records"]], float)
        idx = np.clip(np.searchsorted(x, grid, side="right") - 1, 0, len(x) - 1)
        curves.append(y[idx])
    return np.array(curves)


def blind_metric(runs: list[dict], key: str = "test_blind_metric") -> float | None:
    """Mean image-blind baseline of runs (rls3_jax.blind); None when no run recorded it (runs started before
    it existed). Runs of one VLM share their fixed sets, so their values agree."""
    values = [r["records"][-1][key] for r in runs if r["records"][-1].get(key) is not None]
    return float(np.mean(values)) if values else None


def _draw_blind_lines(ax, runs: list[dict]) -> None:
    """Fig. 5's floor: one dashed line per VLM at what a model that never sees the image scores."""
    by_vlm: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_vlm[run["config"]["vlm"]].append(run)
    for vlm, group in sorted(by_vlm.items()):
        value = blind_metric(group)
        if value is not None:
            ax.axhline(value, ls="--", color="0.4", lw=1, label=f"image-blind baseline, {vlm} ({value:.3f})")


def area_under_curve(run: dict) -> float:
    """Area under the test-metric-vs-generated-samples step curve, normalised by the samples generated."""
    x = np.array([r["generated_samples"] for r in run["records"]], float)
    y = np.array([r["test_metric"] for r in run["records"]], float)
    if x[-1] <= 0:
        return float(y[0])
    return float(np.sum(np.diff(x) * y[:-1]) / x[-1])


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fig5_score_vs_data(plt, groups: dict, runs: list[dict], ylabel: str, out: Path) -> None:
    """Score vs cumulative generated data, mean and std over seeds, with the image-blind baseline."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, group in sorted(groups.items()):
        end = max(r["records"][-1]["generated_samples"] for r in group)
        grid = np.linspace(0, max(end, 1), 200)
        curves = _curve_on_grid(group, grid)
        mean, std = curves.mean(0), curves.std(0)
        ax.plot(grid, mean, label=f"{label} (n={len(group)})")
        ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
    _draw_blind_lines(ax, runs)
    ax.set_xlabel("generated samples (images from valid moves)")
    ax.set_ylabel(ylabel)
    ax.set_title("Test score vs generated data")
    ax.legend()
    _save(fig, out / "fig5_score_vs_data.png")


def _mean_std_over_runs(group: list[dict], index: int, key: str, keys) -> tuple[np.ndarray, np.ndarray]:
    values = np.array([[r["records"][index][key].get(k, np.nan) for k in keys] for r in group], float)
    seen = ~np.isnan(values)
    # a term absent from the test set has no score: draw nothing rather than warn about NaN
    mean = np.where(seen.any(0), np.nansum(values, 0) / np.maximum(seen.sum(0), 1), 0.0)
    std = np.sqrt(np.nansum((values - mean) ** 2, 0) / np.maximum(seen.sum(0), 1))
    return mean, std


def _tick_label(groups: dict, count_key: str, test_counts: dict, k: str) -> str:
    """The term, how often it occurs in the test set, and in each agent's fine-tuning data (mean over runs)."""
    lines = [k, f"test {test_counts.get(k, 0)}"]
    for label, group in sorted(groups.items()):
        n = np.mean([r["records"][-1].get(f"finetune_{count_key}", {}).get(k, 0) for r in group])
        lines.append(f"{label.split(' / ')[0]} {n:.0f}")
    return "\n".join(lines)


def _fig_by_key(plt, groups: dict, ylabel: str, path: Path, key: str, count_key: str, keys, xlabel: str) -> None:
    """Fig. 6 (per term) or Fig. 7 (by number of terms): scores before and after, with the data's counts."""
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, 2 * len(groups))
    positions = np.arange(len(keys))
    offset = 0
    for label, group in sorted(groups.items()):
        for when, index in (("before", 0), ("after", -1)):
            mean, std = _mean_std_over_runs(group, index, key, keys)
            ax.bar(positions + offset * width, mean, width, yerr=std, label=f"{label}, {when}")
            offset += 1
    test_counts = next(iter(groups.values()))[0]["records"][-1].get(f"test_{count_key}", {})
    ax.set_xticks(positions + width * (offset - 1) / 2)
    ax.set_xticklabels([_tick_label(groups, count_key, test_counts, k) for k in keys], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    _save(fig, path)


def _fig8_finetune_loss(plt, groups: dict, out: Path) -> None:
    """The fine-tuning loss of all iterations concatenated."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, group in sorted(groups.items()):
        losses = [x for r in group[0]["records"] for x in r.get("train_losses", [])]
        ax.plot(losses, label=f"{label} (seed {group[0]['config']['seed']})", lw=0.8)
    ax.set_xlabel("fine-tuning step (PaliGemma) / minibatch (CLIP), concatenated over iterations")
    ax.set_ylabel("training loss")
    ax.legend()
    _save(fig, out / "fig8_finetune_loss.png")


def _fig9_validation(plt, groups: dict, vlm: str, out: Path) -> None:
    """The validation curve with the early-stopping point."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, group in sorted(groups.items()):
        history = [h for r in group[0]["records"] for h in r.get("val_history", [])]
        if history:
            steps, values = zip(*history)
            ax.plot(steps, values, marker=".", label=label)
        stops = [r for r in group[0]["records"] if r.get("stopped_early")]
        if stops:
            ax.axvline(stops[0]["val_history"][-1][0], ls="--", color="k", lw=0.8)
            ax.annotate("early stop", (stops[0]["val_history"][-1][0], ax.get_ylim()[0]), fontsize=8)
    ax.set_xlabel("VLM fine-tuning steps (PaliGemma) / epochs (CLIP)")
    ax.set_ylabel(f"validation {_metric_name(vlm)}")
    ax.legend()
    _save(fig, out / "fig9_validation.png")


def draw(runs: list[dict], out: Path) -> Path:
    """The paper's Figs. 5-9 and summary.md from the runs (grouped by agent and VLM) into `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        groups[_label(run)].append(run)
    vlm = runs[0]["config"]["vlm"]
    ylabel = f"test {_metric_name(vlm)}"
    _fig5_score_vs_data(plt, groups, runs, ylabel, out)
    _fig_by_key(plt, groups, ylabel, out / "fig6_per_term.png", "test_per_term", "term_counts", TERMS, "spatial term")
    _fig_by_key(plt, groups, ylabel, out / "fig7_complexity.png", "test_per_complexity", "complexity_counts",
                ("1", "2", "3"), "number of terms")
    _fig8_finetune_loss(plt, groups, out)
    _fig9_validation(plt, groups, vlm, out)
    (out / "summary.md").write_text(summary(groups))
    return out


def summary(groups: dict[str, list[dict]]) -> str:
    lines = ["# RLS3 report", "",
             "| agent / VLM | runs | test before | test after | image-blind test | AUC (test vs samples) "
             "| generated samples | iterations |",
             "|---|---|---|---|---|---|---|---|"]
    for label, group in sorted(groups.items()):
        before = [r["records"][0]["test_metric"] for r in group]
        after = [r["records"][-1]["test_metric"] for r in group]
        auc = [area_under_curve(r) for r in group]
        samples = [r["records"][-1]["generated_samples"] for r in group]
        iters = [r["records"][-1]["iteration"] for r in group]
        floor = blind_metric(group)

        def ms(v):
            return f"{np.mean(v):.3f} ± {np.std(v):.3f}"

        blind = "-" if floor is None else f"{floor:.3f}"  # "-": runs from before the baseline was recorded
        lines.append(f"| {label} | {len(group)} | {ms(before)} | {ms(after)} | {blind} | {ms(auc)} "
                     f"| {int(np.mean(samples))} | {int(np.mean(iters))} |")
    lines += ["", "Image-blind test: what a model that never sees the image scores on the test set (PaliGemma: the "
              "best constant answer; CLIP / NegCLIP: max(chance, a text-only prior); rls3_jax/blind.py).", "",
              "Figures: fig5_score_vs_data.png, fig6_per_term.png, fig7_complexity.png, "
              "fig8_finetune_loss.png, fig9_validation.png.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rls3_jax.report", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (several seeds of SAC and random)")
    parser.add_argument("--out", default=None, help="where to write the figures (default: RUN_DIR/report)")
    args = parser.parse_args(argv)
    try:
        runs = [load_run(d) for d in args.runs]
        out = draw(runs, Path(args.out) if args.out else Path(args.runs[0]) / "report")
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The run directory: run.json (the settings), metrics.jsonl, and the rules for starting or continuing in it.

A new run needs an empty (or absent) directory; --resume needs the same settings as the run it continues
(`RESUMABLE_CHANGES` may differ). A start that fails leaves the directory as it found it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from pathlib import Path

from rls3_jax import distributed
from rls3_jax.config import RunConfig
from rls3_jax.loop.components import RunError

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "run.log"
# Fields that may differ when a run is resumed; any other difference means --out holds another run.
RESUMABLE_CHANGES = {"iterations", "export_data", "unity_build", "unity_port", "unity_timeout_s", "agent_from", "mesh"}


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def check(out: Path, config: RunConfig, resume: bool) -> None:
    """Refuse a directory the run cannot use, before anything is written."""
    if resume:
        if not (out / RUN_FILE).is_file():
            raise RunError(f"--resume: {out} holds no run to continue ({RUN_FILE} is missing)")
        saved = {**dataclasses.asdict(RunConfig()), **json.loads((out / RUN_FILE).read_text())["config"]}
        current = dataclasses.asdict(config)
        changed = sorted(k for k, v in current.items() if k not in RESUMABLE_CHANGES and saved[k] != v)
        if changed:
            detail = ", ".join(f"{k}: {saved[k]!r} -> {current[k]!r}" for k in changed)
            raise RunError(f"--resume: the run in {out} was started with other settings ({detail})")
        return
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise RunError(f"--out {out} already holds files (another run?): choose an empty directory or add --resume")


@contextlib.contextmanager
def starting(out: Path, config: RunConfig, resume: bool):
    """Check `out`, write run.json (a new run), and undo what the block wrote if it fails: a failed start
    leaves `out` as it found it. A resumed run's directory is never cleaned. Process 0 alone touches `out`."""
    main = distributed.is_main()
    existed = out.is_dir()
    if main:
        check(out, config, resume)
        if not resume:
            out.mkdir(parents=True, exist_ok=True)
            write_atomic(out / RUN_FILE, json.dumps({"config": dataclasses.asdict(config)}, indent=2))
    distributed.barrier("prepared")
    try:
        yield
    except BaseException:
        if main and not resume:
            if existed:
                for child in out.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            else:
                shutil.rmtree(out, ignore_errors=True)
        raise


def budget(budget_from: str | None, key: str) -> int:
    """The SAC run's count (`key`: generated_samples or env_steps) that a random run is to match."""
    if budget_from is None:
        return 0
    path = Path(budget_from) / METRICS_FILE
    if not path.is_file():
        raise RunError(f"--budget-from {budget_from}: no {METRICS_FILE} there")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        raise RunError(f"--budget-from {budget_from}: {METRICS_FILE} holds no iteration yet")
    return int(records[-1][key])


def write_metrics(out: Path, records: list[dict]) -> None:
    if distributed.is_main():
        write_atomic(out / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in records))

"""What a run tells its user while it runs: one log line per iteration (stderr and run.log in the run
directory), TensorBoard events, and a progress bar when stderr is a terminal."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from rls3_jax import distributed
from rls3_jax.config import RUBRIC_VLMS, RunConfig
from rls3_jax.loop import rundir
from rls3_jax.loop.records import TIMERS
from rls3_jax.tensorboard import SummaryWriter

log = logging.getLogger("rls3_jax")

SCALARS = ("generated_samples", "env_steps", "valid_fraction", "mean_extrinsic_reward", "train_loss", "val_metric",
           "test_metric", "val_blind_metric", "test_blind_metric", *TIMERS)


def summary_line(config: RunConfig, record: dict) -> str:
    """One line saying where the run stands after an iteration."""
    unit = "rubric" if config.vlm in RUBRIC_VLMS else "accuracy"
    loss = "-" if record["train_loss"] is None else f"{record['train_loss']:.4f}"
    phases = ", ".join(f"{k[:-2].replace('_', ' ')} {record[k]:.1f} s" for k in TIMERS)
    of = "" if config.budget else f"/{config.iterations}"  # a budgeted random run ends at its budget
    return (f"iteration {record['iteration']}{of}: {record['generated_samples']} samples in "
            f"{record['env_steps']} moves (valid {record['valid_fraction']:.2f}), train loss {loss}, {unit} val "
            f"{record['val_metric']:.3f} test {record['test_metric']:.3f} (image-blind val "
            f"{record['val_blind_metric']:.3f} test {record['test_blind_metric']:.3f}); {phases}")


class Reporter:
    """Process 0 writes TensorBoard events and run.log; every process logs and may show a bar."""

    def __init__(self, out: Path, config: RunConfig, done: int = 0):
        """`done`: iterations already run (a resumed run); a new run's settings go to TensorBoard."""
        self.config = config
        self.level = log.level
        self.main = distributed.is_main()
        self.writer = SummaryWriter(out / "tensorboard") if self.main else None
        if self.writer is not None and done == 0:
            self.writer.settings(dataclasses.asdict(config))
        self.file_handler = None
        if self.main:
            self.file_handler = logging.FileHandler(out / rundir.LOG_FILE)
            self.file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            self.file_handler.setLevel(logging.INFO)
            log.addHandler(self.file_handler)
            if log.getEffectiveLevel() > logging.INFO:
                log.setLevel(logging.INFO)  # run.log always holds the iterations; stderr keeps its own level
        self.bar = tqdm(total=config.iterations, initial=done, unit="iteration", file=sys.stderr, leave=False,
                        disable=not sys.stderr.isatty(), dynamic_ncols=True)
        self._redirect = contextlib.ExitStack()
        if not self.bar.disable:  # log lines go above the bar instead of through it
            self._redirect.enter_context(logging_redirect_tqdm(loggers=[log]))

    def phase(self, iteration: int, episode: int | None, phase: str) -> None:
        episode_text = f" episode {episode}/{self.config.episodes}" if episode is not None else ""
        self.bar.set_description_str(f"iteration {iteration}{episode_text} {phase}", refresh=True)
        log.debug("iteration %d%s: %s", iteration, episode_text, phase)  # --log-level debug: within an iteration

    def iteration(self, record: dict, shown: list[tuple] = ()) -> None:
        """Log the iteration's record; `shown`: a few (image, caption, VLM answer or None) of its samples."""
        log.info(summary_line(self.config, record))
        if record["iteration"] > 0:
            self.bar.update(1)
        if self.writer is not None:
            values = {k: record[k] for k in SCALARS if record.get(k) is not None}
            values.update({f"test_per_term/{k}": v for k, v in record["test_per_term"].items()})
            values.update({f"test_per_complexity/{k}": v for k, v in record["test_per_complexity"].items()})
            self.writer.scalars(record["iteration"], values)
            if shown:
                answers = [answer for _, _, answer in shown]
                self.writer.samples(record["iteration"], np.stack([image for image, _, _ in shown]),
                                    [caption for _, caption, _ in shown], None if None in answers else answers)

    def close(self) -> None:
        self.bar.close()
        self._redirect.close()
        if self.writer is not None:
            self.writer.close()
        if self.file_handler is not None:
            log.removeHandler(self.file_handler)
            self.file_handler.close()
            log.setLevel(self.level)

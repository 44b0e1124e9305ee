"""The loop's state between iterations, and its checkpoint in the run directory.

Everything needed to continue exactly is saved at iteration boundaries: VLM and agent states, the replay
buffer, the records and early stopping's progress; all other randomness is derived from (seed, iteration,
episode). The checkpoint is written before metrics.jsonl, so the two always agree.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from rls3_jax import checkpoint, distributed, sharded_checkpoint
from rls3_jax.loop import rundir
from rls3_jax.loop.components import RunError
from rls3_jax.loop.finetune import Progress

CHECKPOINT_DIR = "checkpoint"
VLM_CHECKPOINTS = "vlm_checkpoints"  # multi-process runs: the VLM state as orbax checkpoints (one per iteration)


@dataclasses.dataclass
class LoopState:
    vlm: Any  # the learner's state pytree
    agent: Any  # the agent's state pytree
    buffer: Any  # the replay buffer
    records: list[dict]  # one per iteration so far, iteration 0 first
    progress: Progress

    @property
    def iteration(self) -> int:
        """The iteration the loop is about to run."""
        return len(self.records)


def _agent_checkpoint() -> str:
    """Multi-process runs: every process has its own agent and replay buffer, checkpointed beside the run's."""
    return CHECKPOINT_DIR if distributed.is_main() else f"{CHECKPOINT_DIR}_process{jax.process_index()}"


def save(out: Path, state: LoopState) -> None:
    """One process: one safetensors checkpoint. Several: the VLM state as an orbax checkpoint of this iteration
    (every process writes its shards), then each process's agent, then process 0's records, which name the
    iteration to resume from (an interrupted save leaves the previous iteration's checkpoints in use)."""
    agent_tree = {"agent": jax.tree_util.tree_leaves(state.agent), "buffer": jax.tree_util.tree_leaves(state.buffer)}
    meta = {"records": state.records, "progress": dataclasses.asdict(state.progress)}
    if jax.process_count() == 1:
        checkpoint.save(out / CHECKPOINT_DIR, {"vlm": jax.tree_util.tree_leaves(state.vlm), **agent_tree}, meta)
    else:
        iteration = len(state.records) - 1
        sharded_checkpoint.save(out / VLM_CHECKPOINTS / f"{iteration:05d}", state.vlm)
        checkpoint.save(out / _agent_checkpoint(), agent_tree, meta)
        distributed.barrier(f"saved {iteration}")
        if distributed.is_main():
            for old in sorted((out / VLM_CHECKPOINTS).iterdir())[:-1]:
                shutil.rmtree(old, ignore_errors=True)
    rundir.write_metrics(out, state.records)


def exists(out: Path) -> bool:
    return (out / CHECKPOINT_DIR).is_dir()


def _placed_like(template, loaded):
    """Loaded host arrays in the template's structure, dtypes and placement (a learner's mesh included)."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    values = jax.tree_util.tree_leaves(loaded)
    if len(values) != len(leaves):
        raise ValueError(f"checkpoint holds {len(values)} leaves, expected {len(leaves)}")
    placed = []
    for i, (t, v) in enumerate(zip(leaves, values)):
        if np.shape(t) != np.shape(v):
            raise ValueError(f"checkpoint leaf {i} has shape {np.shape(v)}, expected {np.shape(t)}")
        if isinstance(t, jax.Array):
            placed.append(jax.device_put(np.asarray(v, t.dtype), t.sharding))
        elif isinstance(t, (np.ndarray, np.generic)):
            placed.append(np.asarray(v, t.dtype))
        else:
            placed.append(type(t)(v))
    return jax.tree_util.tree_unflatten(treedef, placed)


def restore(out: Path, template: LoopState, fill: dict) -> LoopState:
    """The checkpointed state, laid out like `template`; `fill` gives record keys older runs lack."""
    tree, meta = checkpoint.load(out / CHECKPOINT_DIR)
    records = [{**fill, **r} for r in meta["records"]]
    if "env_steps" not in records[0]:  # before it, generated_samples counted invalid moves too
        raise RunError(f"--resume: the checkpoint in {out} was written by an older rls3_jax whose sample counts "
                       "differ; start a new run")
    if jax.process_count() == 1:
        vlm = _placed_like(template.vlm, tree["vlm"])
    else:  # each process reads only its devices' shards
        vlm = sharded_checkpoint.restore(out / VLM_CHECKPOINTS / f"{len(records) - 1:05d}", template.vlm)
        tree, _ = checkpoint.load(out / _agent_checkpoint())
    return LoopState(vlm=vlm, agent=_placed_like(template.agent, tree["agent"]),
                     buffer=_placed_like(template.buffer, tree["buffer"]), records=records,
                     progress=Progress(**meta["progress"]))

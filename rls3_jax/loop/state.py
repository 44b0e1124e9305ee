"""The loop's state between iterations, and its checkpoint in the run directory.

Everything needed to continue exactly is saved at iteration boundaries: VLM and agent states, the replay
buffer, the records and early stopping's progress; all other randomness is derived from (seed, iteration,
episode). The checkpoint is written before metrics.jsonl, so the two always agree.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from rls3_jax import checkpoint
from rls3_jax.loop import rundir
from rls3_jax.loop.components import RunError
from rls3_jax.loop.finetune import Progress

CHECKPOINT_DIR = "checkpoint"


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


def _process_mesh():
    """One device of every process, along a "process" axis."""
    devices = [next(d for d in jax.devices() if d.process_index == p) for p in range(jax.process_count())]
    return jax.sharding.Mesh(np.array(devices), ("process",))


def per_process(tree):
    """Each process's own tree (its agent and replay buffer) as one global array per leaf, with a leading
    process axis: one orbax checkpoint then holds every process's agent, each process writing its own."""
    sharding = jax.sharding.NamedSharding(_process_mesh(), jax.sharding.PartitionSpec("process"))
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)[None]), tree)


def this_process(tree):
    """This process's slice of a `per_process` tree."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_shards[0].data)[0], tree)


def save(out: Path, state: LoopState) -> None:
    """One orbax checkpoint of the VLM state (sharded over the learner's mesh), every process's agent and
    buffer, the records and early stopping's progress; then metrics.jsonl from the same records."""
    tree = {"vlm": state.vlm, "agents": per_process({"agent": state.agent, "buffer": state.buffer})}
    checkpoint.save(out / CHECKPOINT_DIR, tree, {"records": state.records, "progress": dataclasses.asdict(state.progress)})
    rundir.write_metrics(out, state.records)


def exists(out: Path) -> bool:
    return (out / CHECKPOINT_DIR).is_dir()


def restore(out: Path, template: LoopState, fill: dict) -> LoopState:
    """The checkpointed state, laid out like `template`; `fill` gives record keys older runs lack."""
    like = {"vlm": template.vlm, "agents": per_process({"agent": template.agent, "buffer": template.buffer})}
    try:
        tree, meta = checkpoint.load(out / CHECKPOINT_DIR, like=like)
    except checkpoint.OldCheckpointError as err:
        raise RunError(f"--resume: {err}") from None
    records = [{**fill, **r} for r in meta["records"]]
    if "env_steps" not in records[0]:  # before it, generated_samples counted invalid moves too
        raise RunError(f"--resume: the checkpoint in {out} was written by an older rls3_jax whose sample counts "
                       "differ; start a new run")
    mine = this_process(tree["agents"])
    rundir.write_metrics(out, records)  # a kill between the checkpoint and the metrics write left it one behind
    return LoopState(vlm=tree["vlm"], agent=checkpoint.restore_like(template.agent, mine["agent"]),
                     buffer=checkpoint.restore_like(template.buffer, mine["buffer"]), records=records,
                     progress=Progress(**meta["progress"]))

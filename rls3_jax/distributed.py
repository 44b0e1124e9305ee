"""Multi-process (multi-host) runs: start-up and the few exchanges the RLS3 loop needs between processes.

Every process runs the same loop: it generates its own share of the episodes (its own simulator and agent),
the episodes' samples are exchanged so that every process holds the whole fine-tuning batch, and the VLM's
jitted functions then run as one program over the global mesh. With one process every function here is a
no-op, so single-host runs take the same path.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               timeout_s: int = 300) -> None:
    """Join a multi-process run; must run before anything touches devices.

    coordinator "HOST:PORT" with num_processes and process_id (each may instead come from the environment:
    JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); coordinator "auto": JAX's own cluster
    detection (Cloud TPU slices, SLURM, Open MPI). Nothing given: a single-process run.
    """
    env = os.environ
    if coordinator == "auto":
        jax.distributed.initialize(initialization_timeout=timeout_s)
        return
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS")
    num_processes = num_processes if num_processes is not None else _int_env("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _int_env("JAX_PROCESS_ID")
    given = (coordinator, num_processes, process_id)
    if all(v is None for v in given):
        return
    if any(v is None for v in given):
        raise ValueError("--coordinator, --num-processes and --process-id go together (or JAX_COORDINATOR_ADDRESS, "
                         "JAX_NUM_PROCESSES, JAX_PROCESS_ID)")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id {process_id} is not in 0..{num_processes - 1}")
    if env.get("JAX_PLATFORMS", "") == "cpu" or jax.config.jax_platforms == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
                               initialization_timeout=timeout_s)


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


def is_main() -> bool:
    """Process 0 writes the run's files (metrics, TensorBoard, run.json, the loop's checkpoint)."""
    return jax.process_index() == 0


def _allgather_bytes(payload: bytes) -> list[bytes]:
    from jax.experimental import multihost_utils

    sizes = multihost_utils.process_allgather(np.array([len(payload)], np.int64))
    longest = int(np.max(sizes))
    padded = np.zeros(max(longest, 1), np.uint8)
    padded[: len(payload)] = np.frombuffer(payload, np.uint8)
    rows = multihost_utils.process_allgather(padded)
    return [bytes(rows[i][: int(sizes[i][0])]) for i in range(jax.process_count())]


def allgather_episodes(local: dict | None, image_shape: tuple[int, ...]) -> list[dict | None]:
    """Each process's episode of this round ({"images" uint8 [n, H, W, 3], "metadatas", "steps"}, or None
    when it had none), in process order, on every process."""
    if jax.process_count() == 1:
        return [local]
    from jax.experimental import multihost_utils

    header = None if local is None else {"metadatas": local["metadatas"], "steps": local["steps"]}
    headers = [json.loads(b) for b in _allgather_bytes(json.dumps(header).encode())]
    counts = [0 if h is None else len(h["metadatas"]) for h in headers]
    longest = max(max(counts), 1)
    images = np.zeros((longest, *image_shape), np.uint8)
    if local is not None and len(local["images"]):
        images[: len(local["images"])] = local["images"]
    gathered = multihost_utils.process_allgather(images)  # [P, longest, H, W, 3]
    return [None if h is None else {"images": gathered[i][: counts[i]], "metadatas": h["metadatas"], "steps": h["steps"]}
            for i, h in enumerate(headers)]


def barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)

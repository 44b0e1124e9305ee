"""An agent as a bundle of pure functions over its state pytree, so drivers take the agent as a value.

Each function is jitted once where it is defined (an agent module's `@jax.jit` functions); a driver that
composes them inside its own compiled computation (a vector step, a `lax.scan` rollout) calls them there and
they are traced into it. The bundle is hashable, so jitted drivers take it as a static argument.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Agent:
    name: str  # the --agent value and the checkpoint's "agent" field
    init: Callable  # (config, obs_dim, act_dim, seed) -> state
    act: Callable  # (state, obs [..., obs_dim], deterministic=False) -> (action [..., act_dim], state)
    update: Callable  # (state, batch: Transition with a batch axis) -> (state, metrics)
    train_step: Callable  # (state, buffer) -> (state, metrics): counts one env step, updates once started
    step: Callable  # (state, buffer, transition, obs) -> (action, state, buffer, slot, metrics); donates both

"""The agents by name: the bundles the loop, the drivers and agent checkpoints choose from."""

from __future__ import annotations

from rls3_jax.sac.agent import SAC
from rls3_jax.sac.bundle import Agent
from rls3_jax.sac.random_agent import RANDOM

AGENTS: dict[str, Agent] = {agent.name: agent for agent in (SAC, RANDOM)}


def get(name: str) -> Agent:
    """The agent bundle called `name` ("sac" or "random")."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; expected one of {', '.join(AGENTS)}")
    return AGENTS[name]

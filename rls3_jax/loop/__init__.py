"""The RLS3 loop (Algorithm 1) as named phases over one loop state; `run` is the loop itself."""

from rls3_jax.loop.algorithm import run
from rls3_jax.loop.components import Components, RunError, build, make_env, make_learner
from rls3_jax.loop.learner import Evaluation, Learner

__all__ = ["run", "RunError", "Components", "build", "make_env", "make_learner", "Learner", "Evaluation"]

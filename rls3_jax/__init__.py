"""rls3_jax: RLS3 (RL-guided synthetic data for VLM spatial reasoning) in JAX."""

__version__ = "0.1.0"

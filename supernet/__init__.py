"""Supernet search: DARTS bilevel optimisation (first and second order), alpha-based genotype derivation,
DARTS-PT projection (perturb/projection.py), the PertNAS supernet variant, and the pictures of a run."""

"""Supernet search: DARTS bilevel optimisation (first and second order), alpha-based genotype derivation,
DARTS-PT projection (perturb/projection.py), and the pictures of a run; the PertNAS supernet variant
(``--method pertnas``) runs perturb/search.py run_search_on_supernet."""

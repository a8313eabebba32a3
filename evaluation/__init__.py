"""Retraining a genotype from scratch and reporting honestly (train_eval.py's library).

- :mod:`evaluation.recipe`: the config dataclasses (the published recipes are YAML presets in configs/).
- :mod:`evaluation.complexity`: parameters and multiply-adds of a network.
- :mod:`evaluation.report`: the report of one run and the mean / std summary over seeds.
- :mod:`evaluation.run`: the retraining loop (one seed; several seeds in sub run dirs).
"""

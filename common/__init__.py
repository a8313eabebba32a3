"""Leaf utilities every room may use: one-line user errors and CLI entry (errors.py), atomic file writes
and strict JSON (atomic.py), and the restricted unpickler (restricted_pickle.py).

This package imports nothing of the project, so space/, data/ and nasbench301_eval/ can use it without
reaching up into launch/ (checked by scripts/check_imports.py).
"""

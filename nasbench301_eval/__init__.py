"""NASBench-301 scoring without the nasbench301 package: encoding (genotype -> 56-value vector),
surrogate (the xgb ensemble, read through a restricted unpickler) and the score.py CLI."""

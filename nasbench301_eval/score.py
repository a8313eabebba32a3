"""Score DARTS-space genotypes with the NASBench-301 xgb surrogate, without the nasbench301 package.

    python nasbench301_eval/score.py DARTS_V2 my_cell.json --models nb_models/xgb_v1.0 [--noise --seed 0] [--json]

For each genotype: its NB301 configuration and 56-value feature vector (nasbench301_eval.encoding), then the
ensemble's predicted CIFAR-10 validation accuracy (mean and std over members; with --noise one draw of
N(mean, std^2), NB301's ``with_noise``). Without --models it prints the configuration and vector, says
where the surrogate can be downloaded and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from common.errors import ArgumentParser, UserInputError, cli_entry  # noqa: E402
from nasbench301_eval.encoding import genotype_to_config, genotype_to_vector  # noqa: E402
from nasbench301_eval.surrogate import SurrogateEnsemble  # noqa: E402
from space.genotype import builtin_names, genotype_name, load_genotype  # noqa: E402

# Download pages linked from the NB301 README (github.com/automl/nasbench301); the zips themselves are
# https://ndownloader.figshare.com/files/24693026 (v0.9) and .../24992018 (v1.0), per its model_downloader.py.
SURROGATE_URLS = {
    "v0.9": "https://figshare.com/articles/software/nasbench301_models_v0_9_zip/12962432",
    "v1.0": "https://figshare.com/articles/software/nasbench301_models_v1_0_zip/13061510",
}


class NoSurrogateError(UserInputError):
    """Scoring was asked for without a surrogate folder."""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python nasbench301_eval/score.py",
        description="Predict the CIFAR-10 validation accuracy of DARTS genotypes with the NASBench-301 xgb "
                    "surrogate, read directly (no nasbench301/ConfigSpace install needed).",
    )
    parser.add_argument("genotypes", nargs="+", metavar="GENOTYPE",
                        help="a genotype JSON file, a file holding legacy Genotype(...) text, or a built-in "
                             f"name ({', '.join(builtin_names())}); give several to score them all")
    parser.add_argument("--models", type=Path, metavar="DIR",
                        help="the surrogate folder holding model_config.json and ensemble_member_*/ "
                             "(e.g. nb_models/xgb_v1.0 from the NB301 model zip); without it only the "
                             "configuration and vector are printed, and the exit status is 2")
    parser.add_argument("--noise", action="store_true",
                        help="also draw one noisy prediction N(mean, std^2) per genotype (NB301 with_noise)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the noise generator, so --noise is reproducible (default: 0)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON list of records (name, config, vector, mean, std, sample) "
                             "instead of text")
    return parser


def score(args: argparse.Namespace) -> list[dict]:
    """One record per genotype: name, config, vector and, with a surrogate, mean, std, members (and sample)."""
    genotypes = [(genotype_name(spec), load_genotype(spec)) for spec in args.genotypes]
    records = [{"name": name, "config": genotype_to_config(genotype),
                "vector": genotype_to_vector(genotype).tolist()} for name, genotype in genotypes]
    if args.models is None:
        return records
    ensemble = SurrogateEnsemble.load(args.models)
    vectors = np.array([record["vector"] for record in records])
    mean, std = ensemble.predict(vectors)
    samples = ensemble.sample(vectors, np.random.default_rng(args.seed)) if args.noise else None
    for index, record in enumerate(records):
        record["mean"] = float(mean[index])
        record["std"] = float(std[index])
        record["members"] = len(ensemble)
        if samples is not None:
            record["sample"] = float(samples[index])
    return records


def format_text(records: list[dict]) -> str:
    lines = []
    for record in records:
        if "mean" not in record:
            lines.append(f"== {record['name']}")
            lines += [f"  {key} = {value}" for key, value in record["config"].items()]
            lines.append(f"  vector ({len(record['vector'])}) = {record['vector']}")
            continue
        line = f"{record['name']}: validation accuracy {record['mean']:.4f} +- {record['std']:.4f} " \
               f"(mean +- std over {record['members']} members)"
        if "sample" in record:
            line += f", noisy sample {record['sample']:.4f}"
        lines.append(line)
    return "\n".join(lines)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.noise and args.models is None:
        raise NoSurrogateError("--noise needs --models DIR (the surrogate folder)")
    if args.seed < 0:  # numpy's default_rng takes any non-negative integer
        raise UserInputError(f"--seed must not be negative, got {args.seed}")
    records = score(args)
    print(json.dumps(records, indent=2) if args.json else format_text(records))
    if args.models is None:
        raise NoSurrogateError(
            "no --models DIR given, so only the configuration and vector were printed; download the NB301 "
            f"surrogate models (v1.0: {SURROGATE_URLS['v1.0']} , v0.9: {SURROGATE_URLS['v0.9']} ), unzip, "
            "and pass the xgb folder, e.g. --models nb_models/xgb_v1.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stage A's per-member results: this rank's resume record on disk, and the exchange over the process group.

On disk (each rank's own run directory; no shared filesystem needed)::

    run_dir/stage_a/member_<m>.json    {"<edge>": {"scores": [n floats], "standard_errors": [...], ...}, ...}

Each finished unit rewrites its member's file atomically; a restarted run resumes each member from it.
The files are only a resume record: at the end of stage A every rank's results travel over the process
group (:func:`exchange`): the (npop, 14, n) score tensor with a done mask by all_gather, and the per-unit
details (reference accuracy, standard errors, separation, digests) as JSON bytes. Every row must be
present and finite before the population is averaged; a missing or broken one stops the run with one
line naming the member and the edge.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import torch

from common.atomic import write_atomically
from launch.distributed import DistEnv, all_gather_tensor
from launch.fingerprint import result_fingerprint
from perturb.config import RESULT_SECTIONS, EvolutionConfig
from common.errors import UserInputError
from space.search_network import NUM_EDGES


class SearchStateError(UserInputError):
    """A run directory whose search state cannot be resumed, or a stage-A result that is missing or broken."""


class MemberRecords:
    """The stage-A files of one run directory (this rank's members).

    ``fingerprint``: a digest of the settings the units are scored with (launch/fingerprint.py), kept in
    ``stage_a/fingerprint.txt`` beside them, so a rank whose run directory is its own (no shared
    filesystem, where rank 0's fingerprint.json is not seen) still refuses rows scored with other settings.
    """

    def __init__(self, run_dir: Path, n_ops: int, fingerprint: str = ""):
        self.directory = Path(run_dir) / "stage_a"
        self.n_ops = n_ops
        self.fingerprint = fingerprint

    def path(self, member: int) -> Path:
        return self.directory / f"member_{member}.json"

    def read(self, member: int) -> dict:
        """Member ``member``'s finished units {str(edge): record}, validated; {} when it has no file."""
        path = self.path(member)
        if not path.is_file():
            return {}
        stamp = self.directory / "fingerprint.txt"
        if self.fingerprint and stamp.is_file() and stamp.read_text().strip() != self.fingerprint:
            raise SearchStateError(f"{path} was scored with other settings than this run's (seed, data, network, "
                                   "optim or search); use another --note, or --set resume=false to start anew")
        try:
            records = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as error:
            raise SearchStateError(f"{path} cannot be read ({error}); delete it to rescore member {member}") from None
        return validate_records(records, self.n_ops, f"{path} (delete it to rescore member {member})")

    def write(self, member: int, records: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.fingerprint and not (self.directory / "fingerprint.txt").is_file():
            write_atomically(self.directory / "fingerprint.txt", self.fingerprint.encode())
        write_atomically(self.path(member), json.dumps(records, sort_keys=True).encode())

    def delete_all(self) -> None:
        """Delete every stage-A file of this rank's run directory (a search started anew)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def records_for(run_dir: Path, cfg: EvolutionConfig) -> MemberRecords:
    """The stage-A files of a search run ``cfg`` (an EvolutionConfig) in ``run_dir``, stamped with the digest
    of its results-changing settings (perturb/config.py RESULT_SECTIONS)."""
    settings = json.dumps(result_fingerprint(cfg, RESULT_SECTIONS), sort_keys=True)
    return MemberRecords(run_dir, len(cfg.search.ops), hashlib.sha256(settings.encode()).hexdigest())


def validate_records(records: object, n_ops: int, where: str) -> dict:
    """``records`` if it is {"<edge 0..13>": {"scores": n finite numbers, ...}}; else SearchStateError."""
    if not isinstance(records, dict):
        raise SearchStateError(f"{where}: expected an object of edges, got {type(records).__name__}")
    for key, record in records.items():
        if key not in {str(edge) for edge in range(NUM_EDGES)}:
            raise SearchStateError(f"{where}: {key!r} is not an edge 0..{NUM_EDGES - 1}")
        scores = record.get("scores") if isinstance(record, dict) else None
        if (not isinstance(scores, list) or len(scores) != n_ops
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in scores)):
            raise SearchStateError(f"{where}: edge {key} needs 'scores', {n_ops} finite numbers")
    return records


def exchange(own: dict[int, dict], npop: int, n_ops: int, env: DistEnv) -> dict[int, dict]:
    """Every member's records on every rank, from each rank's ``own`` {member: records} (collective).

    Scores travel as a (npop, 14, n) float64 tensor with a (npop, 14) done mask, all-gathered; member m's
    rows are taken from rank m % W, its owner. The details travel as JSON bytes. Raises SearchStateError
    naming the first member and edge whose row is missing or not finite.
    """
    scores = torch.full((npop, NUM_EDGES, n_ops), math.nan, dtype=torch.float64)
    done = torch.zeros((npop, NUM_EDGES), dtype=torch.uint8)
    for member, records in own.items():
        for edge, record in records.items():
            scores[member, int(edge)] = torch.tensor(record["scores"], dtype=torch.float64)
            done[member, int(edge)] = 1
    details_only = {str(m): {e: {k: v for k, v in record.items() if k != "scores"} for e, record in records.items()}
                    for m, records in own.items()}  # the scores travel in the tensor
    details = torch.frombuffer(bytearray(json.dumps(details_only).encode()), dtype=torch.uint8)
    gathered_scores = [t.cpu() for t in all_gather_tensor(scores.to(env.device))]
    gathered_done = [t.cpu() for t in all_gather_tensor(done.to(env.device))]
    gathered_details = [json.loads(bytes(t.cpu().tolist())) for t in all_gather_tensor(details.to(env.device))]
    merged: dict[int, dict] = {}
    for member in range(npop):
        owner = member % env.world_size
        records = gathered_details[owner].get(str(member), {})
        for edge in range(NUM_EDGES):
            row = gathered_scores[owner][member, edge]
            if not gathered_done[owner][member, edge] or str(edge) not in records:
                raise SearchStateError(f"stage A: member {member} edge {edge} has no score from rank {owner}")
            if not torch.isfinite(row).all():
                raise SearchStateError(f"stage A: member {member} edge {edge} has a non-finite score {row.tolist()}")
            records[str(edge)]["scores"] = row.tolist()  # the tensor is the authority
        merged[member] = records
    return merged

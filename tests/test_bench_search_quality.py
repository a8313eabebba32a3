"""bench/search_quality.py: random cells, and a whole (tiny) comparison run offline on digits."""
import json
import os
import subprocess
import sys
from pathlib import Path

from space.genotype import Genotype

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from search_quality import random_genotypes  # noqa: E402


def test_random_cells_are_valid_seeded_and_varied():
    cells = random_genotypes(20, seed=3)
    assert list(cells) == [f"random_{i}" for i in range(20)]
    assert all(isinstance(g, Genotype) and g.is_shared for g in cells.values())  # validated on construction
    assert random_genotypes(20, seed=3) == cells and random_genotypes(20, seed=4) != cells
    assert len({str(g) for g in cells.values()}) == 20


def test_quick_comparison_writes_the_report(tmp_path):
    given = {"mine": Genotype.single([("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 0),
                                      ("max_pool_3x3", 2), ("skip_connect", 1), ("dil_conv_3x3", 3),
                                      ("sep_conv_5x5", 0), ("avg_pool_3x3", 4)]).to_dict(name="mine")}
    (tmp_path / "given.json").write_text(json.dumps(given))
    out = tmp_path / "out"
    tiny_search = ["search.npop=1", "search.stage_a.epochs=1", "search.stage_b.epochs=1", "network.layers=1",
                   "network.channels=4", "search.val_batches=1", "search.calibration_batches=1",
                   "data.train_subset=300"]
    command = [sys.executable, "bench/search_quality.py", "--quick", "--out", str(out), "--genotypes",
               str(tmp_path / "given.json"), "--seeds", "0", "--random", "2", "--eval-epochs", "1",
               *(f"--search-set={item}" for item in tiny_search),
               "--eval-set=network.layers=2", "--eval-set=network.channels=4"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((out / "search_quality.json").read_text())
    kinds = {name: cell["kind"] for name, cell in report["cells"].items()}
    assert kinds == {"evolutionary-seed0": "searched", "random_0": "random", "random_1": "random",
                     "DARTS_V2": "given", "mine": "given"}
    assert report["cells"]["mine"]["genotype"]["normal"] == given["mine"]["normal"]
    errors = {name: cell["test_error"] for name, cell in report["cells"].items()}
    assert all(0.0 <= e <= 100.0 for e in errors.values())
    assert report["searched_mean"] == errors["evolutionary-seed0"]
    assert report["random_median"] == (errors["random_0"] + errors["random_1"]) / 2
    rank = 1 + sum(errors[r] < errors["evolutionary-seed0"] for r in ("random_0", "random_1"))
    assert report["ranks_among_random"] == {"evolutionary-seed0": rank}
    assert (out / "search_quality.png").stat().st_size > 0

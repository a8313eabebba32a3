"""Bad input to search_evolutionary.py: one line on stderr, exit status 2, nothing started."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("arguments, fragment", [
    (["--npop", "0"], "search.npop"),
    (["--set", "search.ops=[sep_conv_3x3, conv_9x9]"], "conv_9x9"),
    (["--set", "data.backend=ffcv", "--set", "data.dataset=cifar10", "--train_path", "{missing}"], "missing"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, arguments, fragment):
    arguments = [a.replace("{missing}", str(tmp_path / "missing")) for a in arguments]
    result = subprocess.run([sys.executable, "search_evolutionary.py", "--config", "configs/quickstart.yaml",
                             "--save", str(tmp_path), "--note", "bad", *arguments],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert not list(tmp_path.glob("bad/checkpoints/ckpt_*"))

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


@pytest.mark.parametrize("changed, key", [(["--seed", "3"], "seed"),
                                          (["--set", "search.edge_order=[0,1,2,3,4,5,6,7,8,9,10,11,13,12]"],
                                           "search.edge_order"),
                                          (["--set", "optim.learning_rate=0.1"], "optim.learning_rate")])
def test_resume_with_another_result_changing_setting_is_refused(tmp_path, changed, key):
    """The run directory's fingerprint (launch/fingerprint.py) holds every result-changing key; a resume with
    another value stops in one line that names the key and how to start anew, before anything is changed."""
    from launch.config import load_config
    from launch.fingerprint import result_fingerprint, write_fingerprint
    from perturb.config import EvolutionConfig
    from perturb.config import RESULT_SECTIONS

    original = load_config(EvolutionConfig, ROOT / "configs" / "quickstart.yaml", ["seed=2"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_fingerprint(run_dir, result_fingerprint(original, RESULT_SECTIONS), is_main=True)
    (run_dir / "config.yaml").write_text("kept: true\n")
    result = subprocess.run([sys.executable, "search_evolutionary.py", "--config", "configs/quickstart.yaml",
                             "--save", str(tmp_path), "--note", "run", "--seed", "2", *changed],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"started with {key} = " in lines[0] and "start anew" in lines[0], result.stderr
    assert (run_dir / "config.yaml").read_text() == "kept: true\n" and not list(run_dir.glob("config.*.yaml"))

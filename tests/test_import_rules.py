"""The import rules of ARCHITECTURE.md, checked by scripts/check_imports.py (a standalone script that parses
the source and imports none of it): the project obeys them, and the script catches each kind of breach."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check_imports.py"


def run_checker(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True, timeout=120)


def write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))


def test_the_project_obeys_the_import_rules():
    result = run_checker(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "import rules hold" in result.stdout


def test_each_rule_is_enforced(tmp_path):
    for package in ("common", "space", "data", "launch", "perturb", "supernet", "evaluation", "nasbench301_eval"):
        write(tmp_path, f"{package}/__init__.py", "")
    write(tmp_path, "common/errors.py", "import json\n")
    write(tmp_path, "common/bad.py", "from launch import rundir\n")                       # leaf reaches up
    write(tmp_path, "space/ok.py", "from common.errors import x\nfrom . import helper\n")  # allowed
    write(tmp_path, "space/helper.py", "")
    write(tmp_path, "space/lazy.py", """
        def draw():
            from data.readers import read   # a lazy import counts too
            return read
    """)
    write(tmp_path, "data/bad.py", "import perturb.scoring\n")
    write(tmp_path, "launch/bad.py", "from ..evaluation import run\n")                    # relative, resolved
    write(tmp_path, "nasbench301_eval/bad.py", "from launch.seeding import seed_everything\n")
    write(tmp_path, "nasbench301_eval/ok.py", "from space.genotype import Genotype\nfrom common import atomic\n")
    write(tmp_path, "perturb/ok.py", "from launch import rundir\nfrom space import ok\n")
    write(tmp_path, "space/show.py", 'import sys\n\nif __name__ == "__main__":\n    sys.exit(0)\n')  # a CLI script
    write(tmp_path, "perturb/uses_cli.py", "from space import show\n")
    write(tmp_path, "main_cli.py", 'import space.show\n\nif __name__ == "__main__":\n    pass\n')

    result = run_checker(tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    expected = {
        "common/bad.py": "common/ must not import launch/",
        "space/lazy.py": "space/ must not import data/",
        "data/bad.py": "data/ must not import perturb/",
        "launch/bad.py": "launch/ must not import evaluation/",
        "nasbench301_eval/bad.py": "nasbench301_eval/ must not import launch/",
        "perturb/uses_cli.py": "space.show is a CLI script",
        "main_cli.py": "space.show is a CLI script",
    }
    for path, message in expected.items():
        assert any(line.startswith(path + ":") and message in line for line in lines), (path, result.stdout)
    flagged = {line.split(":")[0] for line in lines}
    assert flagged == set(expected), result.stdout   # nothing allowed is flagged

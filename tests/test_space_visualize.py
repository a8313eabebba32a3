"""Cell pictures through graphviz."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from space.genotype import builtin_genotype
from space.pictures import draw_genotype

REPO = Path(__file__).resolve().parents[1]
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="graphviz's 'dot' is not installed (scripts/setup.sh installs it)")


@needs_dot
@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG"), ("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_draws_each_format(tmp_path, fmt, magic):
    path = draw_genotype(builtin_genotype("DARTS_V2"), tmp_path / "cell.png", caption="DARTS_V2", fmt=fmt)
    assert path.suffix == f".{fmt}" and path.read_bytes().startswith(magic)
    assert not (tmp_path / "cell").exists()  # graphviz's source file is cleaned up


@needs_dot
def test_svg_shows_ops_caption_and_cells(tmp_path):
    svg = draw_genotype(builtin_genotype("DARTS_V2"), tmp_path / "c.svg", caption="my caption", fmt="svg").read_text()
    assert "my caption" in svg and "normal cell" in svg and "reduction cell" in svg
    assert svg.count("max_pool_3x3") == 5 and "dil_conv_3x3" in svg
    shared = draw_genotype(builtin_genotype("PERTNAS_SUPERNET"), tmp_path / "s.svg", fmt="svg").read_text()
    assert "normal = reduction" in shared and "reduction cell" not in shared


@needs_dot
def test_cli_draws_builtins(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "space" / "visualize.py"), "DARTS_V2", "PERTNAS_SUPERNET",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "DARTS_V2.png").stat().st_size > 1000
    assert (tmp_path / "PERTNAS_SUPERNET.png").stat().st_size > 1000

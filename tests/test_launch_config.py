"""Typed configs: YAML + dotted overrides, type checks, validate(), messages that name the key."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from launch.config import (ConfigError, add_override_argument, config_to_dict, load_config, parse_overrides,
                           save_config)
from common.errors import UserInputError


@dataclass
class SearchSection:
    npop: int = 4
    edges: tuple[int, ...] = (0, 1)
    weights: list[float] = field(default_factory=lambda: [1.0])
    stage: Literal["A", "B"] = "A"

    def validate(self) -> None:
        if self.npop < 1:
            raise ConfigError(f"must be at least 1 (got {self.npop})", key="npop")


@dataclass
class ExampleConfig:
    name: str = "run"
    seed: int = 0
    lr: float = 0.1
    amp: bool = False
    resume: Optional[str] = None
    out: Path = Path("runs/x")
    pair: tuple[int, str] = (1, "a")
    search: SearchSection = field(default_factory=SearchSection)


def test_defaults_then_yaml_then_overrides(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("seed: 3\nsearch:\n  npop: 8\n  stage: B\n")
    config = load_config(ExampleConfig, config_file,
                         ["search.npop=16", "lr=1", "name=123", "amp=true", "search.edges=[2, 3]", "resume=null"])
    assert config.seed == 3 and config.search.stage == "B"
    assert config.search.npop == 16  # the flag beats the file
    assert config.lr == 1.0 and isinstance(config.lr, float)  # an int is a fine float
    assert load_config(ExampleConfig, None, ["lr=3e-4"]).lr == 3e-4  # YAML 1.1 reads 3e-4 as a string
    assert config.name == "123"  # a str field keeps the text typed on the command line
    assert config.amp is True and config.resume is None
    assert config.search.edges == (2, 3)
    assert config.search.weights == [1.0] and config.out == Path("runs/x")


def test_dict_overrides_and_parse_overrides():
    assert parse_overrides(["a.b=4", "c=x", "d=[1, 2]", "e="]) == {"a.b": 4, "c": "x", "d": [1, 2], "e": ""}
    config = load_config(ExampleConfig, None, {"search.npop": 2, "seed": "7"})
    assert config.search.npop == 2 and config.seed == 7


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["search.npopp=4"], "config key 'search.npopp' is unknown (did you mean 'search.npop'?)"),
        (["seeed=1"], "config key 'seeed' is unknown (did you mean 'seed'?)"),
        (["search.npop=four"], "config key 'search.npop' must be int, got the string 'four'"),
        (["search.npop=2.5"], "config key 'search.npop' must be int, got float 2.5"),
        (["amp=1"], "config key 'amp' must be bool, got int 1"),
        (["lr=fast"], "config key 'lr' must be float, got the string 'fast'"),
        (["search.stage=C"], "config key 'search.stage' must be one of 'A', 'B', got the string 'C'"),
        (["search.edges=[1, x]"], "config key 'search.edges[1]' must be int, got the string 'x'"),
        (["pair=[1]"], "config key 'pair' must hold exactly 2 values, got 1"),
        (["search=3"], "config key 'search' must be a mapping (section), got int 3"),
        (["seed.x=3"], "config key 'seed' is not a section, so 'seed.x' cannot be set"),
        (["search.npop=0"], "config key 'search.npop' must be at least 1 (got 0)"),
        (["novalue"], "override 'novalue' must look like KEY=VALUE (e.g. search.npop=4)"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(ExampleConfig, None, overrides)
    assert str(error.value) == message
    assert isinstance(error.value, UserInputError)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(ExampleConfig, tmp_path / "missing.yaml", [])
    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: [1, 2\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_config(ExampleConfig, broken, [])
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(ExampleConfig, listing, [])


def test_required_key():
    @dataclass
    class NeedsData:
        data: str

    with pytest.raises(ConfigError, match="config key 'data' is required but not set"):
        load_config(NeedsData)
    assert load_config(NeedsData, None, ["data=/x"]).data == "/x"


def test_save_and_load_round_trip(tmp_path):
    config = load_config(ExampleConfig, None, ["search.edges=[5, 6]", "resume=ckpt.pt", "pair=[2, b]"])
    path = save_config(config, tmp_path / "run" / "config.yaml")
    assert load_config(ExampleConfig, path) == config
    assert config_to_dict(config)["search"]["edges"] == [5, 6]
    assert config_to_dict(config)["out"] == "runs/x"


def test_argparse_flags():
    parser = add_override_argument(argparse.ArgumentParser())
    args = parser.parse_args(["--config", "c.yaml", "--set", "a=1", "--set", "b.c=2", "--distributed"])
    assert args.config == "c.yaml" and args.set == ["a=1", "b.c=2"] and args.distributed
    # A CLI that already declares --distributed keeps its own.
    own = argparse.ArgumentParser()
    own.add_argument("--distributed", type=int, default=7)
    assert add_override_argument(own).parse_args([]).distributed == 7

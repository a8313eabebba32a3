"""The three CLI configs share one run config, one network base, one batch meaning and one name per thing;
every config module loads without torch (issue 17, deliverable 2)."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import search_evolutionary
import search_supernet
import train_eval
from common.errors import ConfigError
from data.config import BATCH_SIZE_HELP, DataConfig
from data.errors import DataConfigError
from evaluation.recipe import EvalConfig
from launch.config import RENAMED_KEYS, load_config
from launch.run_config import RunConfig, SearchRunConfig
from perturb.config import EvolutionConfig
from space.network_config import NetworkConfig
from supernet.config import SupernetConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
CLI_CONFIGS = {"search_evolutionary": EvolutionConfig, "search_supernet": SupernetConfig, "train_eval": EvalConfig}
CONFIG_MODULES = ["data.config", "launch.config", "launch.run_config", "space.network_config", "space.primitives",
                  "space.genotype", "perturb.config", "supernet.config", "evaluation.recipe"]


@pytest.mark.parametrize("module", CONFIG_MODULES)
def test_config_module_imports_without_torch(module):
    code = f"import sys, {module}; sys.exit(3 if 'torch' in sys.modules else 0)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{module} imports torch" if result.returncode == 3 else result.stderr[-2000:]


def test_every_cli_config_embeds_the_one_run_config():
    assert all(issubclass(cls, RunConfig) for cls in CLI_CONFIGS.values())
    assert issubclass(EvolutionConfig, SearchRunConfig) and issubclass(SupernetConfig, SearchRunConfig)
    run_fields = [field.name for field in dataclasses.fields(RunConfig)]
    for cls in CLI_CONFIGS.values():
        assert [field.name for field in dataclasses.fields(cls)][: len(run_fields)] == run_fields
        # the run checks are RunConfig's, so every CLI refuses the same value with the same line
        for override, message in [("threads=0", "config key 'threads' must be at least 1 or null (got 0)"),
                                  ("device=gpu", "config key 'device' must be null, 'cpu', 'cuda' or 'cuda:N'")]:
            with pytest.raises(ConfigError) as error:
                load_config(cls, None, [override])
            assert str(error.value).startswith(message)
    for cls in (EvolutionConfig, SupernetConfig):
        with pytest.raises(ConfigError, match="config key 'note' must be a plain folder name"):
            load_config(cls, None, ["note=a/b"])
    assert load_config(EvalConfig, None, ["device=cuda:1", "threads=2"]).device == "cuda:1"


def test_every_network_section_shares_one_base():
    for cls in CLI_CONFIGS.values():
        network_type = {field.name: field.type for field in dataclasses.fields(cls)}["network"]
        network = load_config(cls).network
        assert isinstance(network, NetworkConfig), network_type
        with pytest.raises(ConfigError, match=r"^config key 'network.channels' must be an even number >= 2 \(got 3\)$"):
            load_config(cls, None, ["network.channels=3"])
    assert load_config(EvolutionConfig).network.layers == 5 and load_config(SupernetConfig).network.layers == 8
    assert (load_config(EvalConfig).network.channels, load_config(EvalConfig).network.layers) == (36, 20)


@pytest.mark.parametrize("cli_name, override, new_key", [
    ("train_eval", "optim.lr=0.1", "optim.learning_rate"),
    ("train_eval", "optim.min_lr=0", "optim.learning_rate_min"),
    ("train_eval", "cpu_threads=1", "threads"),
    ("search_evolutionary", "cpu_threads=1", "threads"),
    ("search_evolutionary", "optim.lr=0.1", "optim.learning_rate"),
    ("search_supernet", "weights.lr=0.1", "weights.learning_rate"),
    ("search_supernet", "arch.lr=0.1", "arch.learning_rate"),
    ("search_supernet", "pertnas.optim.min_lr=0", "pertnas.optim.learning_rate_min"),
])
def test_old_names_are_refused_in_one_line_with_the_new_name(cli_name, override, new_key, capsys, tmp_path):
    cli = {"search_evolutionary": search_evolutionary, "search_supernet": search_supernet,
           "train_eval": train_eval}[cli_name]
    argv = (["DARTS_V2", "--run-dir", str(tmp_path / "run")] if cli is train_eval else []) + ["--set", override]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    old_key = override.split("=")[0]
    assert lines == [f"error: config key '{old_key}' is an old name (did you mean '{new_key}'?)"]
    assert not (tmp_path / "run").exists()


def test_no_config_uses_an_old_name_and_the_presets_use_none():
    for cls in CLI_CONFIGS.values():
        config = load_config(cls)
        names = set()
        stack = [config]
        while stack:
            node = stack.pop()
            for field in dataclasses.fields(node):
                names.add(field.name)
                value = getattr(node, field.name)
                if dataclasses.is_dataclass(value):
                    stack.append(value)
        assert not names & set(RENAMED_KEYS), cls
    for preset in CONFIGS.glob("*.yaml"):
        text = preset.read_text()
        for old in RENAMED_KEYS:
            assert f"\n{old}:" not in text and f" {old}:" not in text and f"{{{old}:" not in text, (preset, old)


def test_batch_size_is_the_global_batch_split_over_the_ranks():
    data = DataConfig(batch_size=256, eval_batch_size=100)
    assert data.per_rank(1) == data
    assert (data.per_rank(4).batch_size, data.per_rank(4).eval_batch_size) == (64, 100)  # eval: per process
    with pytest.raises(DataConfigError, match=r"^config key 'data.batch_size' is the global batch and must divide "
                                              r"by the number of ranks 3 \(got 256\)$"):
        data.per_rank(3)
    assert "global batch" in BATCH_SIZE_HELP and "batch_size / W" in BATCH_SIZE_HELP
    # the published presets keep the published global batches
    expected = {"pertnas_cifar10.yaml": (EvolutionConfig, 256), "pertnas_supernet_cifar10.yaml": (SupernetConfig, 256),
                "darts_cifar10.yaml": (SupernetConfig, 64), "darts_pt_cifar10.yaml": (SupernetConfig, 64),
                "eval_cifar10.yaml": (EvalConfig, 96), "eval_cifar100.yaml": (EvalConfig, 96),
                "eval_imagenet.yaml": (EvalConfig, 128)}
    for name, (cls, batch) in expected.items():
        assert load_config(cls, CONFIGS / name).data.batch_size == batch, name


@pytest.mark.parametrize("cli", ["search_evolutionary.py", "search_supernet.py", "train_eval.py"])
def test_every_cli_help_states_the_batch_meaning(cli):
    result = subprocess.run([sys.executable, cli, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert " ".join(BATCH_SIZE_HELP.split()) in " ".join(result.stdout.split())


def test_data_config_errors_read_like_every_config_error():
    with pytest.raises(ConfigError, match=r"^config key 'data.search_portion' must be in \(0, 1\) \(got 1.5\)$"):
        load_config(EvalConfig, None, ["data.search_portion=1.5"])
    with pytest.raises(DataConfigError, match=r"^config key 'cutout' must be in 0..1024 \(got 2000\)$"):
        DataConfig(cutout=2000).validate()
    # the loaders name the section too, as the config loader does
    from data.loaders import build_loaders

    with pytest.raises(DataConfigError, match=r"^config key 'data.batch_size' must be at least 1 \(got 0\)$"):
        build_loaders(DataConfig(batch_size=0), device="cpu")

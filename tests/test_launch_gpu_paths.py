"""The GPU code paths, run on the CPU at tiny shapes: bf16 autocast, channels_last and torch.compile.

launch/train.py switches them on for CUDA by default; here each is forced on through its explicit switch
(``precision="bf16"``, ``to_channels_last(..., enabled=True)``, ``maybe_compile``) on the search network
(space/search_network.py) and the evaluation network (space/eval_network.py).

torch.compile: forward passes use inductor, the compiler CUDA runs get (on the CPU it generates C++ and
needs a C++ compiler; without one these tests skip and say so). Train steps are compiled with
``backend="aot_eager"``: the same graph capture (dynamo) and joint forward/backward graph (AOTAutograd) as
inductor, without code generation, because inductor's C++ build of a backward graph takes about 45 s on
a 2-core CI machine.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch

import train_eval
from evaluation.recipe import EvalConfig
from launch.config import load_config
from launch.distributed import DistEnv
from common.errors import ConfigError
from launch.train import PRECISIONS, autocast_context, evaluate, maybe_compile, to_channels_last, train_step
from space.eval_network import EvalNetwork
from space.genotype import builtin_genotype
from space.search_network import NUM_EDGES, SearchNetwork
from tests.workers.eval_synthetic import REPO_ROOT, TINY, write_cifar_like_folder

CPU = torch.device("cpu")
MAIN = DistEnv(rank=0, world_size=1, local_rank=0, device=CPU, backend=None)


def search_network(seed: int = 0, layers: int = 3) -> SearchNetwork:
    """A stage-A-like network: edge 0 expanded to three candidates (one is none), edges 1 and 5 discrete."""
    cell = [()] * NUM_EDGES
    cell[0], cell[1], cell[5] = ("sep_conv_3x3", "skip_connect", "none"), ("max_pool_3x3",), ("dil_conv_3x3",)
    torch.manual_seed(seed)
    return SearchNetwork(3, 10, cell, channels=4, layers=layers)


def eval_network(seed: int = 0, layers: int = 3) -> EvalNetwork:
    torch.manual_seed(seed)
    return EvalNetwork(builtin_genotype("DARTS_V2"), 10, channels=4, layers=layers, auxiliary=layers >= 3,
                       in_channels=3)


def batch(seed: int = 1, count: int = 4, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, size, size, generator=generator), torch.randint(0, 10, (count,), generator=generator)


def conv_output_dtypes(model: torch.nn.Module) -> tuple[list[torch.dtype], list]:
    """Hooks recording the dtype of every Conv2d output; returns (the list they fill, the hook handles)."""
    seen: list[torch.dtype] = []
    handles = [module.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
               for module in model.modules() if isinstance(module, torch.nn.Conv2d)]
    return seen, handles


# ---- bf16 autocast ------------------------------------------------------------------------------------
@pytest.mark.parametrize("build", [search_network, eval_network], ids=["search", "eval"])
def test_bf16_train_step_and_evaluate_run_in_bf16_with_finite_float32_losses(build, one_thread):
    model = build()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    images, labels = batch()
    seen, handles = conv_output_dtypes(model)
    step = train_step(model.train(), images, labels, optimizer, aux_weight=0.4, precision="bf16")
    assert seen and set(seen) == {torch.bfloat16}  # every convolution ran in bf16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32
    seen.clear()
    result = evaluate(model, [(images, labels)], env=MAIN, precision="bf16")
    assert set(seen) == {torch.bfloat16}
    assert torch.isfinite(torch.tensor([step["loss"], result["loss"]])).all() and result["count"] == 4
    seen.clear()
    train_step(model, images, labels, optimizer, precision="auto")  # the default: float32 on the CPU
    evaluate(model, [(images, labels)], env=MAIN, precision="fp32")
    assert set(seen) == {torch.float32}
    for handle in handles:
        handle.remove()


def test_precision_switch_values():
    assert PRECISIONS == ("auto", "bf16", "fp32")
    context = autocast_context(CPU, "bf16")
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.bfloat16
    assert not isinstance(autocast_context(CPU), torch.autocast)  # auto: no autocast on the CPU
    assert not isinstance(autocast_context(CPU, "fp32"), torch.autocast)
    with pytest.raises(ValueError, match="fp16"):
        autocast_context(CPU, "fp16")


# ---- channels_last ------------------------------------------------------------------------------------
@pytest.mark.parametrize("build", [search_network, eval_network], ids=["search", "eval"])
def test_channels_last_model_matches_the_contiguous_one(build, one_thread):
    contiguous = build()
    converted = to_channels_last(copy.deepcopy(contiguous), CPU, enabled=True)
    convs = [m.weight for m in converted.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert to_channels_last(copy.deepcopy(contiguous), CPU, enabled=None).stem[0].weight.is_contiguous()  # auto
    images, labels = batch()
    for mode in ("train", "eval"):
        contiguous.train(mode == "train")
        converted.train(mode == "train")
        torch.manual_seed(3)  # drop path draws, if any
        expected = contiguous(images)
        torch.manual_seed(3)
        got = converted(images)
        expected, got = (out[0] if isinstance(out, tuple) else out for out in (expected, got))
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # one training step from the same weights gives the same loss and the same new weights
    results = []
    for model in (contiguous, converted):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        results.append(train_step(model.train(), images, labels, optimizer))
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-5)
    for before, after in zip(contiguous.parameters(), converted.parameters()):
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


# ---- torch.compile -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inductor():
    """Inductor's CPU backend, proven to build here once per module; skips with the reason if it cannot."""
    try:
        result = torch.compile(lambda x: x * 2 + 1, backend="inductor")(torch.ones(3))
    except Exception as error:  # noqa: BLE001 (the build failed: no working C++ compiler here)
        pytest.skip(f"torch.compile's inductor backend cannot build on this machine: {type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''}")
    assert result.tolist() == [3.0, 3.0, 3.0]  # a build that computes wrongly is a failure, not a skip
    torch._dynamo.reset()
    return "inductor"


def test_compiled_search_network_follows_its_masks(inductor, one_thread):
    """Forward (inductor): masking an op recompiles and gives the uncompiled network's output; unmasking
    (and the same mask set through ``removed``) reuses the graph of that mask set."""
    network = search_network(layers=1).eval()
    compiled = maybe_compile(network, True, backend=inductor)
    assert maybe_compile(network, False) is network
    images, _ = batch(count=2)

    def check() -> torch.Tensor:
        with torch.no_grad():
            expected, got = network(images), compiled(images)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        return got

    every_op = check()
    network.set_active(0, "sep_conv_3x3", False)
    masked = check()
    assert not torch.allclose(every_op, masked)  # the mask really changed the computation
    network.set_active(0, "sep_conv_3x3", True)
    torch.testing.assert_close(check(), every_op, rtol=1e-4, atol=1e-5)
    with network.removed(ops=[(0, "sep_conv_3x3")]):
        torch.testing.assert_close(check(), masked, rtol=1e-4, atol=1e-5)


def test_compiled_eval_network_forward_matches(inductor, one_thread):
    network = eval_network(layers=1).eval()
    compiled = maybe_compile(network, True, backend=inductor)
    images, _ = batch(count=2)
    with torch.no_grad():
        expected, got = network(images), compiled(images)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("build", [search_network, eval_network], ids=["search", "eval"])
def test_compiled_train_steps_equal_plain_ones_and_evaluate_runs_compiled(build, one_thread):
    """Train steps (aot_eager) equal the uncompiled steps, also with a mask toggled between them (search
    network); evaluate() runs the compiled module (not the plain one inside it)."""
    plain, twin = build(), build()
    captured = []

    def counting_aot_eager(graph_module, example_inputs):
        captured.append(graph_module)
        return torch._dynamo.backends.registry.lookup_backend("aot_eager")(graph_module, example_inputs)

    torch._dynamo.reset()
    compiled = maybe_compile(twin, True, backend=counting_aot_eager)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (plain, twin)]
    for step, (images, labels) in enumerate([batch(1), batch(2), batch(3)]):
        if isinstance(plain, SearchNetwork):  # the middle step runs without sep_conv_3x3 on edge 0
            for network in (plain, twin):
                network.set_active(0, "sep_conv_3x3", step != 1)
        losses = []
        for model, optimizer in zip((plain, compiled), optimizers):
            torch.manual_seed(step)  # the eval network's drop path draws
            losses.append(train_step(model.train(), images, labels, optimizer, aux_weight=0.4)["loss"])
        assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-6)
    for expected, got in zip(plain.parameters(), twin.parameters()):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    graphs = len(captured)
    assert graphs >= 1
    result = evaluate(compiled, [batch(4)], env=MAIN)
    assert len(captured) > graphs and compiled.training  # an eval-mode graph was compiled; mode restored
    assert result["top1"] == evaluate(plain, [batch(4)], env=MAIN)["top1"]


def _conv_layouts(network: torch.nn.Module) -> set[bool]:
    """{True} when every convolution whose layout is unambiguous (k x k, more than one input channel per
    group: for the others both layouts have the same strides) is channels_last, {False} when none is."""
    return {m.weight.is_contiguous(memory_format=torch.channels_last) for m in network.modules()
            if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1 and m.weight.shape[1] > 1}


@pytest.mark.parametrize("setting, channels_last", [(True, True), (None, False), (False, False)])  # on the CPU
def test_search_networks_follow_the_channels_last_key(tmp_path, setting, channels_last):
    """Both searches build their networks in the layout ``channels_last`` asks for (null: CUDA only)."""
    from types import SimpleNamespace

    from perturb.config import EvolutionConfig, SearchNetworkConfig
    from perturb.runtime import SearchRuntime
    from supernet.config import SupernetConfig, SupernetNetworkConfig
    from supernet.search import build_supernet

    cfg = EvolutionConfig(channels_last=setting, network=SearchNetworkConfig(channels=4, layers=2))
    loaders = SimpleNamespace(info=SimpleNamespace(in_channels=3, num_classes=10))
    runtime = SearchRuntime(cfg, MAIN, loaders, loaders, tmp_path)
    cell = tuple(("sep_conv_3x3", "dil_conv_3x3") if edge == 0 else () for edge in range(NUM_EDGES))
    assert _conv_layouts(runtime.new_network(cell, "A/m0/e0")) == {channels_last}
    supernet_cfg = SupernetConfig(channels_last=setting, network=SupernetNetworkConfig(channels=4, layers=3))
    assert _conv_layouts(build_supernet(supernet_cfg, 3, 10, CPU)) == {channels_last}


# ---- train_eval's config keys ------------------------------------------------------------------------
def test_train_eval_takes_precision_and_channels_last(tmp_path, one_thread):
    config = load_config(EvalConfig, None, ["precision=bf16", "channels_last=true", "compile=false"])
    assert (config.precision, config.channels_last, config.compile) == ("bf16", True, False)
    assert (EvalConfig().precision, EvalConfig().channels_last) == ("auto", True)  # channels_last everywhere
    assert load_config(EvalConfig, None, ["channels_last=null"]).channels_last is None  # CUDA only
    with pytest.raises(ConfigError, match="precision"):
        load_config(EvalConfig, None, ["precision=fp16"])
    folder = write_cifar_like_folder(tmp_path / "images", classes=4, train_per_class=8, test_per_class=2)
    run_dir = tmp_path / "run"
    sets = [*TINY, "data.dataset=imagefolder", "data.image_size=16", "network.layers=2", "epochs=1",
            "max_steps_per_epoch=2", "precision=bf16", "channels_last=true"]
    args = ["DARTS_V2", "--config", str(REPO_ROOT / "configs" / "eval_quick.yaml"), "--run-dir", str(run_dir),
            "--data-dir", str(folder)] + [arg for item in sets for arg in ("--set", item)]
    assert train_eval.main(args) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert report["config"]["precision"] == "bf16" and report["config"]["channels_last"] is True
    assert torch.isfinite(torch.tensor([report["train"]["final_loss"], report["test"]["final_loss"]])).all()

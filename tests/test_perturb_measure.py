"""The BatchNorm treatment of perturb-val measurements (perturb/measure.py).

A network whose running statistics are stale (as after a short training phase) must rank the candidates
exactly as it does with converged statistics under 'recalibrate' and 'batch'; 'running' (the published
measurement, kept behind the switch) is what stale statistics break.
"""
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from data.readers import read_dataset
from launch.config import load_config
from launch.distributed import DistEnv
from common.errors import ConfigError
from launch.train import evaluate, train_epoch
from perturb.config import EvolutionConfig
from perturb.measure import SearchValMeasure, bn_treatment
from perturb.scoring import Candidate, perturb_val
from perturb.snapshot import Snapshot, state_digest
from space.search_network import SearchNetwork

ENV = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)
OPS = ("max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3")


def digits_batches(start, count, size=48):
    data = read_dataset("digits", None, "train")
    images = (torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 16.0 - 0.3) / 0.4
    labels = torch.from_numpy(data.labels).long()
    return [(images[start + i * size: start + (i + 1) * size], labels[start + i * size: start + (i + 1) * size])
            for i in range(count)]


@pytest.fixture(scope="module")
def trained():
    """A search network with edge 0 expanded, trained on digits; its running statistics then converged by
    many extra forwards (train mode, no weight change)."""
    torch.manual_seed(0)
    cell = [("skip_connect",)] * 14
    cell[0] = OPS
    network = SearchNetwork(1, 10, cell, channels=8, layers=2)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9)
    train = digits_batches(0, 16)
    for _ in range(3):
        train_epoch(network, train, optimizer, env=ENV, sync=False)
    network.train()
    with torch.no_grad():
        for _ in range(10):
            for images, _ in train:
                network(images)
    return network, optimizer, train, digits_batches(16 * 48, 6)


def make_stale(network):
    """Running statistics as after a few steps from their initial values (mean 0, variance 1)."""
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.mul_(0.3)
            module.running_var.mul_(0.3).add_(0.7)


def scores(network, optimizer, measure):
    return perturb_val(network, [Candidate(0, op) for op in OPS], snapshot=Snapshot.capture(network, optimizer),
                       finetune=lambda module, steps: None, measure=measure, steps=0, env=ENV, baseline=True)


@pytest.mark.parametrize("measurement", ["recalibrate", "batch"])
def test_stale_statistics_rank_the_candidates_as_converged_ones(trained, measurement):
    network, optimizer, train, val = trained
    measure = SearchValMeasure(val, measurement=measurement, calibration=train[:4], env=ENV)
    converged = scores(network, optimizer, measure)
    stale_network = SearchNetwork(1, 10, network.candidates["normal"], channels=8, layers=2)
    stale_network.load_state_dict(network.state_dict())
    make_stale(stale_network)
    stale = scores(stale_network, optimizer, measure)
    assert stale.reference == converged.reference and stale.scores == converged.scores
    assert converged.reference > 60.0  # a trained network, measured fairly


def test_the_published_running_measurement_is_what_stale_statistics_break(trained):
    network, optimizer, train, val = trained
    running = SearchValMeasure(val, measurement="running", env=ENV)
    converged = scores(network, optimizer, running)
    stale_network = SearchNetwork(1, 10, network.candidates["normal"], channels=8, layers=2)
    stale_network.load_state_dict(network.state_dict())
    make_stale(stale_network)
    stale = scores(stale_network, optimizer, running)
    assert stale.reference < converged.reference - 10.0
    # 'running' is exactly eval mode with the network's own statistics (the published measurement)
    assert converged.reference == evaluate(network, val, env=ENV, sync=False)["top1"]


def test_measuring_leaves_the_network_as_it_was(trained):
    network, _, train, val = trained
    network.train()
    before = state_digest(network)
    momenta = [m.momentum for m in network.modules() if isinstance(m, nn.BatchNorm2d)]
    for measurement in ("recalibrate", "batch", "running"):
        SearchValMeasure(val, measurement=measurement, calibration=train[:2], env=ENV)(network, [0, 1])
    assert state_digest(network) == before and network.training
    assert [m.momentum for m in network.modules() if isinstance(m, nn.BatchNorm2d)] == momenta


def test_batch_statistics_equal_a_train_mode_forward(trained):
    network, _, _, val = trained
    images = val[0][0]
    with torch.no_grad():
        reference = SearchNetwork(1, 10, network.candidates["normal"], channels=8, layers=2)
        reference.load_state_dict(network.state_dict())
        expected = reference.train()(images)
        network.eval()
        with bn_treatment(network, "batch"):
            got = network(images)
    torch.testing.assert_close(got, expected)


def test_recalibrated_statistics_are_the_calibration_batches_cumulative_average(trained):
    network, _, train, _ = trained
    stem_bn = network.stem[1]
    with torch.no_grad():
        stem_out = torch.cat([network.stem[0](images) for images, _ in train[:3]])
    network.eval()
    with bn_treatment(network, "recalibrate", train[:3]):
        # each batch's mean, averaged with equal weight (momentum=None), equals the pooled mean here (equal sizes)
        torch.testing.assert_close(stem_bn.running_mean, stem_out.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-4)
        assert not stem_bn.training


def test_measurement_config_switch():
    preset = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    cfg = load_config(EvolutionConfig, preset, ["search.measurement=running", "search.baseline=false"])
    assert cfg.search.measurement == "running" and not cfg.search.baseline
    assert EvolutionConfig().search.measurement == "recalibrate" and EvolutionConfig().search.baseline
    with pytest.raises(ConfigError, match="search.measurement"):
        load_config(EvolutionConfig, preset, ["search.measurement=eval"])
    with pytest.raises(ConfigError, match="search.adaptive_rounds"):
        load_config(EvolutionConfig, preset, ["search.adaptive_rounds=0"])


def test_reference_schedule_and_stage_d_fresh_optimizer(monkeypatch, tmp_path):
    """optim.schedule_per=epoch holds the rate within an epoch and ends at learning_rate_min (the reference's
    CosineAnnealingLR); a stage with finetune_optimizer 'fresh' fine-tunes with a new SGD at lr / divisor."""
    import perturb.runtime as runtime_module
    from perturb.runtime import SearchRuntime, build_search_loaders
    from perturb.training import cosine_schedule, make_optimizer

    cfg = load_config(EvolutionConfig, Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml",
                      ["optim.schedule_per=epoch", "search.stage_d.finetune_optimizer=fresh", "search.val_batches=1",
                       "network.layers=1", "network.channels=4", "data.train_subset=200"])
    network = SearchNetwork(1, 10, [("skip_connect", "max_pool_3x3")] * 14, channels=4, layers=1)
    optimizer = make_optimizer(network, 0.1, cfg.optim)
    scheduler = cosine_schedule(optimizer, 3 * 4, cfg.optim, steps_per_epoch=4)
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:4] == [0.1] * 4 and len(set(rates[4:8])) == 1 and rates[4] < 0.1
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg.optim.learning_rate_min)

    member, ddp = build_search_loaders(cfg.data, ENV, cfg.seed)
    runtime = SearchRuntime(cfg, ENV, member, ddp, tmp_path)
    seen = []
    real_train_epoch = runtime_module.train_epoch

    def spy(module, batches, used, **kwargs):
        seen.append((used, used.param_groups[0]["lr"], len(used.state)))
        return real_train_epoch(module, batches, used, **kwargs)

    monkeypatch.setattr(runtime_module, "train_epoch", spy)
    runtime.score(network, optimizer, [Candidate(0, "max_pool_3x3")], cfg.search.stage_d, key="D/test", shard=False,
                  tag="test")
    stage_lr = cfg.optim.learning_rate / cfg.search.stage_d.lr_divisor
    assert seen and all(used is not optimizer and lr == stage_lr and state == 0 for used, lr, state in seen)
    seen.clear()
    runtime.score(network, optimizer, [Candidate(0, "max_pool_3x3")], cfg.search.stage_c, key="C/test", shard=False,
                  tag="test")
    assert seen and all(used is optimizer and lr == cfg.optim.finetune_lr for used, lr, _ in seen)

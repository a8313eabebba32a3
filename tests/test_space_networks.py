"""Ops, the search network (masks, alphas, shared cell) and the evaluation networks."""
import pytest
import torch

from space.eval_network import EvalNetwork, count_parameters, drop_path
from space.genotype import builtin_genotype
from space.ops import PRIMITIVES, SEARCH_OPS, make_op
from space.search_network import (EDGE_ENDPOINTS, NUM_EDGES, SearchNetwork, candidates_from_genotype,
                                  full_candidates, node_edges)


def test_edge_order_matches_reference():
    assert NUM_EDGES == 14
    assert node_edges(2) == (0, 1) and node_edges(3) == (2, 3, 4)
    assert node_edges(4) == (5, 6, 7, 8) and node_edges(5) == (9, 10, 11, 12, 13)
    assert EDGE_ENDPOINTS[8] == (3, 4)


@pytest.mark.parametrize("name", SEARCH_OPS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7])
def test_every_op_keeps_channels_and_scales_space(name, stride, size):
    op = make_op(name, 4, stride, affine=False)
    out = op(torch.randn(2, 4, size, size))
    expected = (size + stride - 1) // stride
    assert out.shape == (2, 4, expected, expected)


def test_pools_get_bn_only_while_searching():
    searching, final = make_op("avg_pool_3x3", 4, 1, affine=False), make_op("avg_pool_3x3", 4, 1, affine=True)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in searching.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in final.modules())
    conv = make_op("sep_conv_3x3", 4, 1, affine=False)
    assert all(not bn.affine for bn in conv.modules() if isinstance(bn, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 28, 28)])
@pytest.mark.parametrize("weighting", ["sum", "softmax", "maxw"])
def test_search_network_forward_backward(shape, weighting):
    net = SearchNetwork(shape[1], 10, full_candidates(), channels=4, layers=3, weighting=weighting)
    logits = net(torch.randn(*shape))
    assert logits.shape == (2, 10)
    logits.sum().backward()
    if weighting != "sum":
        assert net.alphas["normal"].shape == (14, len(SEARCH_OPS))
        assert net.alphas["normal"].grad is not None and net.alphas["normal"].grad.abs().sum() > 0
    else:
        assert len(net.arch_parameters()) == 0


def test_maxw_weights_follow_sharpdarts_formula():
    net = SearchNetwork(3, 10, full_candidates(), channels=4, layers=3, weighting="maxw")
    with torch.no_grad():
        net.alphas["normal"].copy_(torch.randn(14, len(SEARCH_OPS)))
    probs = torch.softmax(net.alphas["normal"], dim=-1)
    expected = 1 - probs.max(dim=-1, keepdim=True).values + probs
    assert torch.allclose(net.edge_weights("normal"), expected)
    assert torch.allclose(net.edge_weights("normal").max(dim=-1).values, torch.ones(14))


class _CallCounter:
    def __init__(self):
        self.calls = 0

    def __call__(self, module, inputs, output):
        self.calls += 1


def test_masked_op_module_is_not_called():
    torch.manual_seed(0)
    net = SearchNetwork(3, 10, full_candidates(), channels=4, layers=3)
    target = net.cells[0].edges[3]
    sep_index = target.names.index("sep_conv_5x5")
    counter = _CallCounter()
    target.ops[sep_index].register_forward_hook(counter)
    x = torch.randn(2, 3, 16, 16)
    net(x)
    assert counter.calls == 1
    with net.removed(ops=[(3, "sep_conv_5x5")]):
        net(x)
        assert counter.calls == 1  # masked: never computed
        assert "sep_conv_5x5" not in net.active_ops("normal")[3]
    assert "sep_conv_5x5" in net.active_ops("normal")[3]  # the mask is restored on exit
    net(x)
    assert counter.calls == 2


def test_none_op_is_never_computed_and_removed_edge_is_skipped():
    net = SearchNetwork(3, 10, full_candidates(), channels=4, layers=3)
    zero = net.cells[0].edges[0]
    counter = _CallCounter()
    zero.ops[zero.names.index("none")].register_forward_hook(counter)
    x = torch.randn(2, 3, 16, 16)
    net(x)
    assert counter.calls == 0
    with net.removed(edges=[0, 1]):  # node 2 loses both inputs: it outputs zeros, nothing crashes
        assert net.active_ops("reduce")[0] == ()
        assert net(x).shape == (2, 10)


def test_single_op_edge_is_the_plain_op():
    genotype = builtin_genotype("DARTS_V2")
    net = SearchNetwork(3, 10, candidates_from_genotype(genotype), candidates_from_genotype(genotype, "reduce"),
                        channels=4, layers=3, weighting="sum")
    edge = net.cells[0].edges[0]
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(edge(x), edge.ops[0](x))
    assert net.active_ops("normal")[0] == ("sep_conv_3x3",)
    assert net.active_ops("reduce")[0] == ("max_pool_3x3",)


def test_separate_cells_mask_independently_shared_cell_together():
    separate = SearchNetwork(3, 10, full_candidates(), full_candidates(), channels=4, layers=3)
    separate.set_active(2, "max_pool_3x3", False, cell_type="reduce")
    assert "max_pool_3x3" in separate.active_ops("normal")[2]
    assert "max_pool_3x3" not in separate.active_ops("reduce")[2]
    shared = SearchNetwork(3, 10, full_candidates(), None, channels=4, layers=3)
    shared.set_active(2, "max_pool_3x3", False, cell_type="reduce")
    assert "max_pool_3x3" not in shared.active_ops("normal")[2]
    state = shared.mask_state()
    shared.set_edge_active(2, True)
    shared.load_mask_state(state)
    assert "max_pool_3x3" not in shared.active_ops("normal")[2]


@pytest.mark.parametrize("shape, stem, classes", [((2, 3, 32, 32), "cifar", 10), ((2, 1, 28, 28), "cifar", 10),
                                                 ((2, 3, 224, 224), "imagenet", 1000)])
def test_eval_network_shapes(shape, stem, classes):
    net = EvalNetwork(builtin_genotype("DARTS_V2"), classes, channels=8, layers=5, auxiliary=True,
                      in_channels=shape[1], stem=stem, drop_path_prob=0.2)
    logits, aux = net(torch.randn(*shape))
    assert logits.shape == aux.shape == (2, classes)
    (logits.sum() + 0.4 * aux.sum()).backward()
    net.eval()
    logits, aux = net(torch.randn(*shape))
    assert aux is None and logits.shape == (2, classes)


@pytest.mark.parametrize("name, published", [("DARTS_V2", 3.3e6), ("PERTNAS_EVOLUTIONARY", 3.98e6)])
def test_cifar_eval_network_parameter_count(name, published):
    net = EvalNetwork(builtin_genotype(name), 10, channels=36, layers=20, auxiliary=True)
    params = count_parameters(net)  # auxiliary head excluded
    assert abs(params - published) / published < 0.03
    assert count_parameters(net, exclude_auxiliary=False) > params


def test_drop_path_on_cpu():
    torch.manual_seed(0)
    x = torch.ones(4000, 2, 3, 3)
    out = drop_path(x, 0.25)
    per_sample = out[:, 0, 0, 0]
    kept = per_sample != 0
    assert torch.allclose(per_sample[kept], torch.full_like(per_sample[kept], 1 / 0.75))
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    assert torch.equal(drop_path(x, 0.0), x)


def test_primitives_are_nb301_order():
    assert PRIMITIVES == ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                          "dil_conv_3x3", "dil_conv_5x5")


@pytest.mark.parametrize("weighting", ["maxw", "softmax"])
def test_mixed_edge_output_equals_the_weighted_sum_computed_by_hand(weighting):
    """sharpDARTS Max-W: o(x) = sum_i (1 - max_j w_j + w_i) op_i(x); DARTS: sum_i w_i op_i(x); w = softmax(alpha)."""
    torch.manual_seed(0)
    network = SearchNetwork(3, 10, full_candidates(), channels=4, layers=1, weighting=weighting).eval()
    with torch.no_grad():
        network.alphas["normal"].normal_(0.0, 1.0)
    edge, x = 3, torch.randn(2, 4, 6, 6)
    mixed = network.cells[0].edges[edge]
    alpha = network.alphas["normal"][edge].detach()
    w = [a.exp().item() / alpha.exp().sum().item() for a in alpha]  # softmax by hand
    if weighting == "maxw":
        w = [1.0 - max(w) + wi for wi in w]
    outputs = [torch.zeros(2, 4, 6, 6) if name == "none" else op(x) for name, op in zip(mixed.names, mixed.ops)]
    expected = sum(wi * out for wi, out in zip(w, outputs))
    with torch.no_grad():
        got = mixed(x, network.edge_weights("normal")[edge])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        network.set_active(edge, "sep_conv_3x3", False)  # a removed op leaves the sum; the others keep w_i
        skip = mixed.names.index("sep_conv_3x3")
        without = sum(wi * out for i, (wi, out) in enumerate(zip(w, outputs)) if i != skip)
        torch.testing.assert_close(mixed(x, network.edge_weights("normal")[edge]), without, rtol=1e-5, atol=1e-6)
    if weighting == "maxw":  # the two weightings differ here, so this test tells them apart
        softmax_sum = sum(wi * out for wi, out in zip(torch.softmax(alpha, 0).tolist(), outputs))
        assert (softmax_sum - expected).abs().max() > 1e-2


def aux_head_input_and_pool(network: EvalNetwork, images: torch.Tensor):
    seen = {}
    head = network.auxiliary_head
    head.register_forward_pre_hook(lambda module, args: seen.setdefault("input", args[0].detach().clone()))
    network.train()
    _, aux_logits = network(images)
    return seen["input"], head.pool(torch.relu(seen["input"])), aux_logits


def test_imagenet_auxiliary_head_pools_7x7_to_2x2_with_stride_2():
    """DARTS AuxiliaryHeadImageNet: AvgPool2d(5, stride=2) on the 7x7 output of cell 2*14//3 (224 input), no
    BN after the 768-channel conv."""
    torch.manual_seed(0)
    network = EvalNetwork(builtin_genotype("DARTS_V2"), 10, channels=8, layers=14, auxiliary=True, stem="imagenet")
    head = network.auxiliary_head
    assert head.pool_stride == 2
    assert not any(isinstance(m, torch.nn.BatchNorm2d) and m.num_features == 768 for m in head.modules())
    features, pooled, aux_logits = aux_head_input_and_pool(network, torch.randn(2, 3, 224, 224))
    assert features.shape[-2:] == (7, 7) and pooled.shape[-2:] == (2, 2) and aux_logits.shape == (2, 10)
    relu = torch.relu(features)
    for row, top in enumerate((0, 2)):  # stride 2: windows start at 0 and 2 (stride 3 would give one 1x1)
        for col, left in enumerate((0, 2)):
            torch.testing.assert_close(pooled[..., row, col], relu[..., top:top + 5, left:left + 5].mean(dim=(-2, -1)))


def test_cifar_auxiliary_head_pools_8x8_to_2x2_with_stride_3():
    torch.manual_seed(0)
    network = EvalNetwork(builtin_genotype("DARTS_V2"), 10, channels=4, layers=8, auxiliary=True)
    head = network.auxiliary_head
    assert head.pool_stride == 3
    assert any(isinstance(m, torch.nn.BatchNorm2d) and m.num_features == 768 for m in head.modules())
    features, pooled, _ = aux_head_input_and_pool(network, torch.randn(2, 3, 32, 32))
    assert features.shape[-2:] == (8, 8)
    relu = torch.relu(features)
    torch.testing.assert_close(pooled[..., 1, 1], relu[..., 3:8, 3:8].mean(dim=(-2, -1)))

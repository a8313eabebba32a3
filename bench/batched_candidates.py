"""Lever measurements for the stage-A perturb-val candidates: vmap-batched candidates and torch.compile.

    python bench/batched_candidates.py vmap --batch 64 --repeats 3 --threads 1
    python bench/batched_candidates.py compile --batch 64 --steps 5 --threads 1 [--backend inductor]

The network is bench/search_step.py's stage-A network (C = --channels, --layers cells, one shared cell,
edge 0 holding the 7 ops + none, the other edges one op + none), in train mode, batch --batch of 3x32x32.

vmap: the 7 perturb-val candidates of edge 0 (each removes one of the 7 ops) are 7 copies of one network
that differ by one mask. Two ways to get every candidate's weight gradients of one batch:
  sequential  for each candidate c: ``network.removed(ops=[(0, op_c)])``, forward, backward (7 passes);
  batched     the 7 copies' parameters and BN buffers stacked on a leading dim of 7 and one
              ``torch.func.vmap(torch.func.grad(loss))`` over them, where edge 0's output is
              sum_i m_c[i] * op_i(x) with the 0/1 mask m_c of candidate c (m_c[c] = 0), and every other edge
              is weighted by 1 (both exact in floating point: 1 * y = y, y + 0 * z = y for finite z).
Printed: the best of --repeats interleaved (sequential, batched) pairs, their ratio, and the largest
|g_batched - g_sequential| over every candidate's parameter gradients relative to the largest |g_sequential|
(vmap runs batched-weight convolutions as grouped ones, so the reductions run in another order). The
removed op's parameters get a zero gradient in the batched path instead of none: an optimizer step
would have to skip them per candidate (SGD skips parameters without gradients, so weight decay and
momentum leave a removed op alone in the sequential path), and its BN running statistics, which the
batched forward updates, would have to be reset per candidate. Those are not implemented here.

compile: ``torch.compile`` (--backend, default inductor) of the network against eager: wall time of the first
compiled train step (the compile), the median of --steps steady train steps of each, and the first step
after a mask change (one op of edge 0 removed, as each perturb-val candidate does) with the number of
graph compilations dynamo counted in between: each candidate's mask set is a Python-level structure,
so a change recompiles.
"""
from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common.errors import ArgumentParser, cli_entry  # noqa: E402
from space.ops import NONE_OP, PRIMITIVES, SEARCH_OPS  # noqa: E402
from space.search_network import NUM_EDGES, SearchNetwork  # noqa: E402

EDGE = 0


def _stage_a_cell(edge: int, seed: int = 0):
    """bench/search_step.py's stage-A cell (that file is a CLI, so it is not imported): edge ``edge`` holds
    SEARCH_OPS (7 ops + none), every other edge (op, 'none') with op drawn by ``random.Random``."""
    generator = random.Random(f"search_step/{seed}")
    return tuple(tuple(SEARCH_OPS) if e == edge else (generator.choice(PRIMITIVES), NONE_OP) for e in range(NUM_EDGES))


class EdgeWeighted(nn.Module):
    """``network``'s forward with explicit per-edge weights: forward(x (N, 3, H, W), weights: 14 vectors, one
    weight per candidate of each edge) -> logits (N, classes). The same modules and order as
    SearchNetwork.forward, with ``weights`` passed to every cell."""

    def __init__(self, network: SearchNetwork):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        net = self.network
        s0 = s1 = net.stem(x)
        for cell in net.cells:
            s0, s1 = s1, cell(s0, s1, weights)
        return net.classifier(torch.flatten(net.global_pooling(s1), 1))


def build(channels: int, layers: int, batch: int):
    torch.manual_seed(0)
    network = SearchNetwork(3, 10, _stage_a_cell(EDGE), None, channels=channels, layers=layers).train()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    return network, images, labels


def sequential_gradients(network: SearchNetwork, images, labels) -> list[dict[str, torch.Tensor]]:
    """Per candidate c (op c of edge 0 removed): {parameter name: gradient} (zeros where none)."""
    grads = []
    for op in PRIMITIVES:
        network.zero_grad(set_to_none=True)
        with network.removed(ops=[(EDGE, op)]):
            F.cross_entropy(network(images), labels).backward()
        grads.append({name: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
                      for name, p in network.named_parameters()})
    return grads


def batched_gradients(network: SearchNetwork, images, labels) -> dict[str, torch.Tensor]:
    """{parameter name: (7, *shape) gradients}, candidate c's in row c, from one vmap over stacked copies."""
    from torch.func import functional_call, grad, vmap
    wrapper = EdgeWeighted(network)
    count = len(PRIMITIVES)
    stack = lambda named: {name: t.detach().unsqueeze(0).expand(count, *t.shape).clone() for name, t in named}
    params, buffers = stack(wrapper.named_parameters()), stack(wrapper.named_buffers())
    widths = [len(edge.names) for edge in network.cells[0].edges]
    masks = torch.ones(count, widths[EDGE])
    masks[torch.arange(count), torch.arange(count)] = 0.0  # candidate c removes op c

    def loss(p, b, mask):
        weights = [mask if e == EDGE else torch.ones(widths[e]) for e in range(NUM_EDGES)]
        return F.cross_entropy(functional_call(wrapper, (p, b), (images, weights)), labels)

    grads = vmap(grad(loss))(params, buffers, masks)
    return {name[len("network."):]: g for name, g in grads.items()}


def measure_vmap(args) -> None:
    network, images, labels = build(args.channels, args.layers, args.batch)
    times = {"sequential": [], "batched": []}
    for repeat in range(args.repeats):
        order = ("sequential", "batched") if repeat % 2 == 0 else ("batched", "sequential")
        for name in order:
            started = time.perf_counter()
            result = (sequential_gradients if name == "sequential" else batched_gradients)(network, images, labels)
            times[name].append(time.perf_counter() - started)
            if name == "sequential":
                sequential = result
            else:
                batched = result
    scale = max(float(g.abs().max()) for per in sequential for g in per.values())
    worst = max(float((batched[name][c] - g).abs().max()) for c, per in enumerate(sequential) for name, g in per.items())
    exact = all(torch.equal(batched[name][c], g) for c, per in enumerate(sequential) for name, g in per.items())
    best = {name: min(values) for name, values in times.items()}
    print(f"vmap: C {args.channels}, {args.layers} cells, batch {args.batch}, threads {torch.get_num_threads()}, "
          f"7 candidates' forward + backward, best of {args.repeats} interleaved pairs")
    for name, values in times.items():
        print(f"  {name:<10} best {best[name]:.3f} s  (all: {', '.join(f'{v:.3f}' for v in values)})")
    print(f"ratio batched / sequential: time x{best['batched'] / best['sequential']:.3f}")
    print(f"gradients bit-identical: {exact}; max |batched - sequential| = {worst:.3g} "
          f"(relative to max |g| {scale:.3g}: {worst / scale:.3g})")


def measure_compile(args) -> None:
    import torch._dynamo
    from torch._dynamo.utils import counters
    network, images, labels = build(args.channels, args.layers, args.batch)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9, weight_decay=3e-4)

    def step(model) -> float:
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        return time.perf_counter() - started

    print(f"compile ({args.backend}): C {args.channels}, {args.layers} cells, batch {args.batch}, threads "
          f"{torch.get_num_threads()}, train step (forward + backward + SGD); each line as soon as measured",
          flush=True)
    step(network)  # warm-up of eager
    eager_s = statistics.median([step(network) for _ in range(args.steps)])
    print(f"  eager step           {eager_s:.3f} s (median of {args.steps})", flush=True)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(network, backend=args.backend)
    first = step(compiled)
    print(f"  first compiled step  {first:.3f} s ({counters['stats']['unique_graphs']} graphs compiled)", flush=True)
    compiled_s = statistics.median([step(compiled) for _ in range(args.steps)])
    print(f"  compiled step        {compiled_s:.3f} s (median of {args.steps}); ratio compiled / eager "
          f"x{compiled_s / eager_s:.3f}", flush=True)
    with network.removed(ops=[(EDGE, PRIMITIVES[3])]):
        after_mask = step(compiled)
        steady_after = statistics.median([step(compiled) for _ in range(max(args.steps // 2, 1))])
    print(f"  after a mask change  {after_mask:.3f} s (graphs compiled so far {counters['stats']['unique_graphs']}); "
          f"steady {steady_after:.3f} s", flush=True)
    back = step(compiled)  # the first mask set again: its compiled graph should be reused
    print(f"  mask restored        {back:.3f} s (graphs compiled so far {counters['stats']['unique_graphs']})",
          flush=True)
    saved = eager_s - compiled_s
    if saved > 0:
        print(f"  break-even: {(first - eager_s) / saved:.0f} steps per compile (the compile's extra time / time saved per step)")
    else:
        print("  break-even: never (a compiled step is not faster)")


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0] + " (see the module docstring).")
    parser.add_argument("lever", choices=("vmap", "compile"))
    parser.add_argument("--channels", type=int, default=16, help="C (16)")
    parser.add_argument("--layers", type=int, default=5, help="cells (5)")
    parser.add_argument("--batch", type=int, default=64, help="images per batch (64)")
    parser.add_argument("--repeats", type=int, default=3, help="vmap: interleaved pairs, best kept (3)")
    parser.add_argument("--steps", type=int, default=5, help="compile: timed steady steps (5)")
    parser.add_argument("--backend", default="inductor", help="compile: torch.compile backend (inductor)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if min(args.channels, args.layers, args.batch, args.repeats, args.steps) < 1 or args.channels % 2:
        parser.error("--channels (even), --layers, --batch, --repeats and --steps must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    (measure_vmap if args.lever == "vmap" else measure_compile)(args)


if __name__ == "__main__":
    cli_entry(main)()

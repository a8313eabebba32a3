"""Memory and time of one search step: the DARTS supernet vs the evolutionary search's stage-A network.

    python bench/supernet_step.py                       # batch 64, CIFAR-shaped input, every network
    python bench/supernet_step.py --steps 5 --second-order

Networks (CIFAR-10 shapes, 3x32x32, 10 classes):
  darts       DARTS supernet, C=16, 8 cells, separate normal/reduction cells, 8 candidates on all 14 edges,
              one bilevel step = architecture step (first order; --second-order adds the unrolled one) + weight step
  pertnas_sn  PertNAS supernet variant, C=16, 5 cells, one shared cell, 7 ops on every edge, 'sum' weights,
              one weight step
  stage_a     the evolutionary search's stage-A network: C=16, 5 cells, one shared cell, ONE edge expanded to
              the 7 ops + none, every other edge one op; one weight step

Memory, measured three ways, each network in a FRESH subprocess so nothing is shared between them:
  saved    bytes of the tensors autograd saves for backward during the step (torch.autograd.graph
           .saved_tensors_hooks, each storage counted once) + parameters + gradients + optimizer state:
           the memory a step must hold at its peak, independent of the allocator;
  rss      peak resident set size of the process (getrusage ru_maxrss) minus the RSS after building the
           network and its optimizers: what the operating system saw (includes allocator caching);
  cuda     torch.cuda.max_memory_allocated() over the steps, when run on a GPU.
Time: median wall time of ``--steps`` steps after one warm-up step.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from launch.train import train_step  # noqa: E402
from space.ops import PRIMITIVES, SEARCH_OPS  # noqa: E402
from space.search_network import NUM_EDGES, SearchNetwork, full_candidates  # noqa: E402
from supernet.architect import Architect  # noqa: E402
from supernet.search import frozen  # noqa: E402

NETWORKS = ("darts", "pertnas_sn", "stage_a")


def build(name: str, device: torch.device) -> SearchNetwork:
    torch.manual_seed(0)
    if name == "darts":
        network = SearchNetwork(3, 10, full_candidates(), full_candidates(), channels=16, layers=8, weighting="softmax")
    elif name == "pertnas_sn":
        network = SearchNetwork(3, 10, full_candidates(PRIMITIVES), None, channels=16, layers=5)
    else:  # stage A: edge 0 expanded, the others hold sep_conv_3x3 (a typical random cell's heaviest op)
        cell = [("sep_conv_3x3",)] * NUM_EDGES
        cell[0] = SEARCH_OPS
        network = SearchNetwork(3, 10, cell, None, channels=16, layers=5)
    return network.to(device)


def _bytes(tensors) -> int:
    seen, total = set(), 0
    for tensor in tensors:
        if not isinstance(tensor, torch.Tensor):
            continue
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def measure(name: str, batch: int, steps: int, second_order: bool, device: torch.device) -> dict:
    network = build(name, device)
    weights = network.weight_parameters()
    optimizer = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)
    architect = None
    if network.arch_parameters():
        arch_optimizer = torch.optim.Adam(network.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
        architect = Architect(network, optimizer, arch_optimizer, second_order=second_order)
    generator = torch.Generator().manual_seed(0)
    make = lambda: (torch.randn(batch, 3, 32, 32, generator=generator).to(device),
                    torch.randint(0, 10, (batch,), generator=generator).to(device))
    train_batch, val_batch = make(), make()

    def step() -> None:
        if architect is not None:
            architect.step(train_batch, val_batch)
        with frozen(network.arch_parameters()):  # the weight step: the alphas get no gradient
            train_step(network, *train_batch, optimizer, grad_clip=5.0)

    rss_base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step()  # warm-up (creates the momentum buffers and Adam state)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        # the forward of the weight step: what backward must keep alive
        loss = F.cross_entropy(network(train_batch[0]), train_batch[1])
    activation_bytes = _bytes(saved)
    del saved, loss
    state_bytes = _bytes(list(network.parameters()) + [p.grad for p in network.parameters() if p.grad is not None])
    state_bytes += _bytes([v for s in optimizer.state.values() for v in s.values()])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    result = {
        "network": name, "batch": batch, "device": str(device), "second_order": bool(second_order and architect),
        "params_M": sum(p.numel() for p in weights) / 1e6,
        "saved_MiB": (activation_bytes + state_bytes) / 2**20,
        "activations_MiB": activation_bytes / 2**20,
        "rss_peak_increase_MiB": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_base) / 2**20,
        "step_s": statistics.median(times),
    }
    if device.type == "cuda":
        result["cuda_peak_MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " (see the module docstring).")
    parser.add_argument("--batch", type=int, default=64, help="images per step (default 64, DARTS)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per network after one warm-up (default 3)")
    parser.add_argument("--second-order", action="store_true", help="DARTS with the unrolled architecture step")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--only", choices=NETWORKS, help="measure one network in this process (internal)")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.only:
        print(json.dumps(measure(args.only, args.batch, args.steps, args.second_order, device)))
        return
    results = {}
    for name in NETWORKS:  # a fresh process each, so peak RSS belongs to one network
        command = [sys.executable, __file__, "--only", name, "--batch", str(args.batch), "--steps", str(args.steps),
                   "--device", str(device)] + (["--second-order"] if args.second_order else []) + \
                  (["--threads", str(args.threads)] if args.threads else [])
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[name] = json.loads(output.strip().splitlines()[-1])
    columns = ["params_M", "activations_MiB", "saved_MiB", "rss_peak_increase_MiB", "step_s"]
    if device.type == "cuda":
        columns.append("cuda_peak_MiB")
    print(f"batch {args.batch}, device {device}, second order {args.second_order}")
    print(f"{'network':<12}" + "".join(f"{c:>24}" for c in columns))
    for name, result in results.items():
        print(f"{name:<12}" + "".join(f"{result[c]:>24.3f}" for c in columns))
    base = results["stage_a"]
    for name in ("darts", "pertnas_sn"):
        ratios = ", ".join(f"{c} x{results[name][c] / base[c]:.2f}" for c in columns if base[c])
        print(f"{name} / stage_a: {ratios}")


if __name__ == "__main__":
    main()

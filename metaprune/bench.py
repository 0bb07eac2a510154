"""Benchmarks (``metaprune bench …``): throughput of the train loop against a common research loop.

Speed targets are checked here, never in timed tests. Each figure is a median over repeats after a
warm-up, measured on the machine it runs on; the JSON records threads, device and versions.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.datasets import DataSplits, load_dataset
from metaprune.errors import MetapruneError
from metaprune.networks import build_network, prunable_layout
from metaprune.provenance import package_versions
from metaprune.training import PopulationResult, TrainConfig, resolve_device, train_population


def gemm_flops(device: torch.device, size: int = 1024, repeats: int = 10) -> float:
    """The machine's measured float32 GEMM rate (FLOP/s) on square matrices."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * size**3 / statistics.median(times)


def training_flops_per_sample(net: nn.Module) -> int:
    """GEMM FLOPs of one training sample of an MLP: forward, weight gradient, input gradient (not layer 0)."""
    layers = prunable_layout(net).layers
    return sum(2 * layer.size * (3 if layer.depth > 0 else 2) for layer in layers)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _PixelDataset(torch.utils.data.Dataset):
    """torchvision's MNIST ``__getitem__``: a PIL image per sample, then ToTensor and Normalize."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> None:
        from torchvision import transforms

        self.pixels = pixels.reshape(-1, pixels.shape[-2], pixels.shape[-1]).numpy()
        self.labels = labels
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.pixels[i], mode="L")), int(self.labels[i])


class _MaskedLinear(nn.Linear):
    def __init__(self, source: nn.Linear, mask: torch.Tensor) -> None:
        super().__init__(source.in_features, source.out_features)
        self.load_state_dict(source.state_dict())
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def reference_loop_samples_per_s(
    data: DataSplits, device: torch.device, epochs: int, mask: torch.Tensor
) -> list[float]:
    """The common research loop (SynFlow/OpenLTH style): a torchvision-style Dataset with a per-sample
    PIL transform, a DataLoader (batch 64, shuffle, num_workers 0 — worker processes only slow 2 cores),
    ``.to(device)`` per batch, masks multiplied in the forward pass, torch.optim.SGD.

    Samples/s of each of ``epochs`` timed epochs, after one warm-up epoch.
    """
    net = build_network("lenet_300_100", data.input_shape, data.num_classes, 0)
    layout = prunable_layout(net)
    masked = nn.Sequential(
        nn.Flatten(),
        *[
            m
            for i, (layer, lm) in enumerate(zip(net.layers, layout.split(mask), strict=True))
            for m in (
                (_MaskedLinear(layer, lm),) if i == len(net.layers) - 1 else (_MaskedLinear(layer, lm), nn.ReLU())
            )
        ],
    ).to(device)
    mean, std = data.mean[0], data.std[0]
    pixels = (data.train_x.cpu() * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8)
    loader = torch.utils.data.DataLoader(
        _PixelDataset(pixels, data.train_y.cpu(), mean, std), batch_size=64, shuffle=True, num_workers=0
    )
    opt = torch.optim.SGD(masked.parameters(), lr=0.1)
    rates = []
    for epoch in range(epochs + 1):
        _sync(device)
        t = time.perf_counter()
        seen = 0
        total = 0.0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss = F.cross_entropy(masked(x), y)
            total += loss.item() * x.shape[0]  # the SynFlow loop's running loss (a sync per step)
            loss.backward()
            opt.step()
            seen += y.shape[0]
        _sync(device)
        if epoch >= 1:  # the first epoch is warm-up
            rates.append(seen / (time.perf_counter() - t))
    return rates


def population_runs(
    data: DataSplits,
    device: torch.device,
    k: int,
    epochs: int,
    mask_mode: str = "grad",
    density: float = 1.0,
    repeats: int = 3,
    autograd: bool = False,
) -> list[PopulationResult]:
    """``repeats`` timed ``train_population`` calls of ``epochs`` epochs each, after one warm-up epoch.

    A call's time includes stacking the members and the final evaluation: what a caller gets.
    """
    nets = [build_network("lenet_300_100", data.input_shape, data.num_classes, s) for s in range(k)]
    n = prunable_layout(nets[0]).total
    g = torch.Generator().manual_seed(0)
    masks = [torch.rand(n, generator=g) < density for _ in range(k)]
    cfg = TrainConfig(epochs=epochs, early_stopping=False, mask_mode=mask_mode, autograd=autograd)
    train_population(nets, data, replace(cfg, epochs=1), 0, masks=masks, device=device)  # warm-up
    return [train_population(nets, data, cfg, 0, masks=masks, device=device) for _ in range(repeats)]


def _parallel_worker(k: int, epochs: int, repeats: int, barrier, results) -> None:
    torch.set_num_threads(1)
    data = load_dataset("mnist5k")
    population_runs(data, torch.device("cpu"), k, 1, repeats=1)  # warm-up before the common start
    barrier.wait()
    start = time.monotonic()  # system-wide clock: comparable across the workers
    runs = population_runs(data, torch.device("cpu"), k, epochs, repeats=repeats)
    results.put((start, time.monotonic(), sum(r.samples for r in runs)))


def parallel_populations_samples_per_s(workers: int, k: int, epochs: int, repeats: int) -> float:
    """Aggregate network-samples/s of ``workers`` processes training populations of ``k`` on one thread each.

    The workers start together (a barrier after their warm-up); the rate is all their samples over the
    wall time from the common start to the last finish, so a worker running alone cannot inflate it.
    """
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    procs = [ctx.Process(target=_parallel_worker, args=(k, epochs, repeats, barrier, results)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    spans = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    start = min(s[0] for s in spans)
    end = max(s[1] for s in spans)
    return sum(s[2] for s in spans) / (end - start)


TARGETS = {"speedup_vs_reference": 7.0, "best_speedup_vs_reference": 10.0, "gemm_fraction": 0.5}


def bench_train(
    device: str | None = None,
    populations: tuple[int, ...] = (1, 4, 16, 64),
    epochs: int = 3,
    reference_epochs: int = 3,
    repeats: int = 3,
    parallel: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Reference loop vs the population loop on LeNet-300-100 / mnist5k (density 1: every weight kept).

    Every rate is the median of ``repeats`` timed runs (the reference: of ``reference_epochs`` epochs).
    ``progress`` is told which measurement starts.
    """
    for name, value in (("epochs", epochs), ("repeats", repeats), ("reference-epochs", reference_epochs)):
        if not isinstance(value, int) or value <= 0:
            raise MetapruneError(f"--{name} must be a positive integer, got {value}")
    if not populations or any(not isinstance(k, int) or k <= 0 for k in populations):
        shown = ",".join(str(k) for k in populations)
        raise MetapruneError(f"bad --populations {shown!r}; accepted: positive integers, comma-separated, e.g. 1,4,16")
    say = progress if progress is not None else (lambda what: None)
    dev = resolve_device(device)
    data = load_dataset("mnist5k", device="cpu")
    net = build_network("lenet_300_100", data.input_shape, data.num_classes, 0)
    full = torch.ones(prunable_layout(net).total, dtype=torch.bool)
    say("reference loop")
    ref = statistics.median(reference_loop_samples_per_s(data, dev, reference_epochs, full))
    data_dev = data.to(dev)

    def median_rate(k: int, mode: str = "grad", density: float = 1.0, autograd: bool = False) -> float:
        say(f"population K={k}, mask mode {mode}, density {density:g}" + (", autograd" if autograd else ""))
        runs = population_runs(data_dev, dev, k, epochs, mode, density, repeats, autograd)
        return statistics.median(r.samples / r.seconds for r in runs)

    pop = {k: median_rate(k) for k in populations}
    modes = {mode: median_rate(1, mode, 0.1) for mode in ("grad", "forward")}
    best_k = max(pop, key=pop.get)
    best = pop[best_k]
    # The same batched-matmul forward with autograd's backward and torch.optim: what the step saves.
    autograd_rates = {str(k): median_rate(k, autograd=True) for k in sorted({min(populations), best_k})}
    result = {
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "network": "lenet_300_100",
        "dataset": "mnist5k",
        "epochs_per_run": epochs,
        "repeats": repeats,
        "reference_samples_per_s": ref,
        "metaprune_samples_per_s": pop[1] if 1 in pop else median_rate(1),
        "population": {str(k): v for k, v in pop.items()},
        "mask_mode_samples_per_s_at_density_0.1": modes,
        "autograd_population": autograd_rates,
    }
    if parallel and dev.type == "cpu" and torch.get_num_threads() > 1:
        # Several populations on one thread each can beat one population on all threads (small GEMMs).
        workers = torch.get_num_threads()
        k_each = max(1, best_k // workers)
        say(f"{workers} populations of K={k_each} on one thread each")
        rate = parallel_populations_samples_per_s(workers, k_each, epochs, repeats)
        result["parallel_populations"] = {"workers": workers, "k_per_worker": k_each, "samples_per_s": rate}
        best = max(best, rate)
    say("float32 GEMM rate")
    flops = gemm_flops(dev)
    result["speedup_vs_reference"] = result["metaprune_samples_per_s"] / ref
    result["best_speedup_vs_reference"] = best / ref
    result["best_network_samples_per_s"] = best
    result["gemm_flops"] = flops
    result["flops_per_sample"] = training_flops_per_sample(net)
    result["gemm_fraction"] = best * training_flops_per_sample(net) / flops
    result["targets"] = {
        name: {"value": result[name], "target": target, "met": result[name] >= target}
        for name, target in TARGETS.items()
    }
    result["versions"] = package_versions()
    return result

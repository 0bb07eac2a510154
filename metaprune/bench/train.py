"""``metaprune bench train``: throughput of the train loop against a common research loop.

Every population figure is measured in interleaved pairs with the reference loop (``bench.measure``). The
JSON records threads, device, versions, the OpenMP wait policy and the load average before and after the
run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from metaprune.bench.measure import interleaved, load_average, ratio_stats
from metaprune.config import require_positive
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


class ReferenceLoop:
    """The common research loop (SynFlow/OpenLTH style): a torchvision-style Dataset with a per-sample
    PIL transform, a DataLoader (batch 64, shuffle, num_workers 0 — worker processes only slow 2 cores),
    ``.to(device)`` per batch, masks multiplied in the forward pass, torch.optim.SGD.

    Built once with one warm-up epoch; each ``run(epochs)`` is one timed measurement (samples/s) that
    continues training the same network, as the population runs continue theirs.
    """

    def __init__(self, data: DataSplits, device: torch.device, mask: torch.Tensor) -> None:
        net = build_network("lenet_300_100", data.input_shape, data.num_classes, 0)
        layout = prunable_layout(net)
        last = len(net.layers) - 1
        self.device = device
        self.model = nn.Sequential(
            nn.Flatten(),
            *[
                m
                for i, (layer, lm) in enumerate(zip(net.layers, layout.split(mask), strict=True))
                for m in ((_MaskedLinear(layer, lm),) if i == last else (_MaskedLinear(layer, lm), nn.ReLU()))
            ],
        ).to(device)
        mean, std = data.mean[0], data.std[0]
        pixels = (data.train_x.cpu() * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8)
        self.loader = torch.utils.data.DataLoader(
            _PixelDataset(pixels, data.train_y.cpu(), mean, std), batch_size=64, shuffle=True, num_workers=0
        )
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.run(1)  # warm-up

    def run(self, epochs: int) -> float:
        _sync(self.device)
        t = time.perf_counter()
        seen = 0
        total = 0.0
        for _ in range(epochs):
            for x, y in self.loader:
                x, y = x.to(self.device), y.to(self.device)
                self.opt.zero_grad()
                loss = F.cross_entropy(self.model(x), y)
                total += loss.item() * x.shape[0]  # the SynFlow loop's running loss (a sync per step)
                loss.backward()
                self.opt.step()
                seen += y.shape[0]
        _sync(self.device)
        return seen / (time.perf_counter() - t)


class PopulationRun:
    """Timed ``train_population`` calls of ``epochs`` epochs on K LeNet-300-100s, after one warm-up epoch.

    A call's time includes stacking the members and the final evaluation: what a caller gets.
    """

    def __init__(
        self,
        data: DataSplits,
        device: torch.device,
        k: int,
        epochs: int,
        mask_mode: str = "grad",
        density: float = 1.0,
        autograd: bool = False,
    ) -> None:
        self.nets = [build_network("lenet_300_100", data.input_shape, data.num_classes, s) for s in range(k)]
        n = prunable_layout(self.nets[0]).total
        g = torch.Generator().manual_seed(0)
        self.masks = [torch.rand(n, generator=g) < density for _ in range(k)]
        self.data, self.device = data, device
        self.config = TrainConfig(epochs=epochs, early_stopping=False, mask_mode=mask_mode, autograd=autograd)
        train_population(self.nets, data, replace(self.config, epochs=1), 0, masks=self.masks, device=device)

    def result(self) -> PopulationResult:
        return train_population(self.nets, self.data, self.config, 0, masks=self.masks, device=self.device)

    def run(self) -> float:
        r = self.result()
        return r.samples / r.seconds


def _parallel_worker(k: int, epochs: int, rounds: int, barrier, results) -> None:
    torch.set_num_threads(1)
    run = PopulationRun(load_dataset("mnist5k"), torch.device("cpu"), k, epochs)  # includes the warm-up
    barrier.wait()  # ready: the parent times nothing while workers warm up
    for _ in range(rounds):
        barrier.wait()  # the parent's reference run of this pair is done
        start = time.monotonic()  # system-wide clock: comparable across the workers
        r = run.result()
        results.put((start, time.monotonic(), r.samples))


class ParallelPopulations:
    """``workers`` processes training populations of ``k`` on one thread each, ``rounds`` times.

    The workers stay alive between rounds and start each round together (a barrier the parent joins
    after its own measurement), so rounds interleave with the parent's reference runs. A round's rate
    is all the workers' samples over the wall time from the common start to the last finish, so a
    worker running alone cannot inflate it.
    """

    def __init__(self, workers: int, k: int, epochs: int, rounds: int) -> None:
        ctx = mp.get_context("spawn")
        self.workers = workers
        self.barrier = ctx.Barrier(workers + 1)
        self.results = ctx.Queue()
        self.procs = [
            ctx.Process(target=_parallel_worker, args=(k, epochs, rounds, self.barrier, self.results))
            for _ in range(workers)
        ]
        for proc in self.procs:
            proc.start()
        self.barrier.wait()

    def run(self) -> float:
        self.barrier.wait()
        spans = [self.results.get() for _ in range(self.workers)]
        return sum(s[2] for s in spans) / (max(s[1] for s in spans) - min(s[0] for s in spans))

    def close(self) -> None:
        for proc in self.procs:
            proc.join()


TARGETS = {"speedup_vs_reference": 7.0, "best_speedup_vs_reference": 10.0, "gemm_fraction": 0.5}


def parse_populations(populations: str | Sequence[int]) -> tuple[int, ...]:
    """Population sizes K: positive integers, given as a sequence or comma-separated text (``--populations``)."""
    shown = populations if isinstance(populations, str) else ",".join(str(k) for k in populations)
    try:
        ks = tuple(int(k) for k in populations.split(",")) if isinstance(populations, str) else tuple(populations)
    except ValueError:
        ks = ()
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k <= 0 for k in ks):
        raise MetapruneError(f"bad --populations {shown!r}; accepted: positive integers, comma-separated, e.g. 1,4,16")
    return ks


class _Pairs:
    """Candidates measured in interleaved pairs with one reference loop, whose rates it collects."""

    def __init__(
        self, data: DataSplits, device: torch.device, epochs: int, reference_epochs: int, repeats: int, say
    ) -> None:
        net = build_network("lenet_300_100", data.input_shape, data.num_classes, 0)
        self.reference = ReferenceLoop(data, device, torch.ones(prunable_layout(net).total, dtype=torch.bool))
        self.data, self.device = data.to(device), device
        self.epochs, self.reference_epochs, self.repeats, self.say = epochs, reference_epochs, repeats, say
        self.reference_rates: list[float] = []

    def paired(self, label: str, candidate: Callable[[], float]) -> tuple[float, dict]:
        """The candidate's median rate and its per-pair speed-ups over the reference loop."""
        self.say(f"{label}, {self.repeats} pairs with the reference loop")
        ref, cand = interleaved(lambda: self.reference.run(self.reference_epochs), candidate, self.repeats)
        self.reference_rates.extend(ref)
        return statistics.median(cand), ratio_stats(ref, cand)

    def population(self, k: int, mode: str = "grad", density: float = 1.0, autograd: bool = False):
        label = f"population K={k}, mask mode {mode}, density {density:g}" + (", autograd" if autograd else "")
        self.say(label)
        return self.paired(label, PopulationRun(self.data, self.device, k, self.epochs, mode, density, autograd).run)

    def parallel(self, best_k: int) -> dict:
        """Several populations on one thread each, which can beat one population on all threads (small GEMMs)."""
        workers = torch.get_num_threads()
        k_each = max(1, best_k // workers)
        self.say(f"{workers} populations of K={k_each} on one thread each")
        team = ParallelPopulations(workers, k_each, self.epochs, self.repeats)
        try:
            rate, ratio = self.paired(f"{workers} populations of K={k_each}", team.run)
        finally:
            team.close()
        return {"workers": workers, "k_per_worker": k_each, "samples_per_s": rate, "speedup": ratio}


def bench_train(
    device: str | None = None,
    populations: str | Sequence[int] = (1, 4, 16, 64),
    epochs: int = 3,
    reference_epochs: int | None = None,
    repeats: int = 3,
    parallel: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Reference loop vs the population loop on LeNet-300-100 / mnist5k (density 1: every weight kept).

    Every population figure is ``repeats`` interleaved pairs (a reference run of ``reference_epochs``
    epochs, default ``epochs``, then a population run of ``epochs`` epochs); rates are medians over the
    runs, speed-ups medians of the per-pair ratios (with min and max). ``progress`` is told which
    measurement starts.
    """
    reference_epochs = epochs if reference_epochs is None else reference_epochs
    require_positive(epochs=epochs, repeats=repeats, reference_epochs=reference_epochs)
    populations = parse_populations(populations)
    say = progress if progress is not None else (lambda what: None)
    load_before = load_average()
    dev = resolve_device(device)
    data = load_dataset("mnist5k", device="cpu")
    flops_per_sample = training_flops_per_sample(build_network("lenet_300_100", data.input_shape, data.num_classes, 0))
    say("float32 GEMM rate")
    gemm_rates = [gemm_flops(dev)]
    pairs = _Pairs(data, dev, epochs, reference_epochs, repeats, say)
    pop = {k: pairs.population(k) for k in populations}
    modes = {mode: pairs.population(1, mode, 0.1)[0] for mode in ("grad", "forward")}
    best_k = max(pop, key=lambda k: pop[k][1]["median"])
    # The same batched-matmul forward with autograd's backward and torch.optim: what the step saves.
    autograd_rates = {str(k): pairs.population(k, autograd=True)[0] for k in sorted({min(populations), best_k})}
    k1 = pop[1] if 1 in pop else pairs.population(1)
    result = {
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (OpenMP default)"),
        "network": "lenet_300_100",
        "dataset": "mnist5k",
        "epochs_per_run": epochs,
        "reference_epochs_per_run": reference_epochs,
        "repeats": repeats,
        "reference_samples_per_s": statistics.median(pairs.reference_rates),
        "reference_samples_per_s_min_max": [min(pairs.reference_rates), max(pairs.reference_rates)],
        "metaprune_samples_per_s": k1[0],
        "population": {str(k): v[0] for k, v in pop.items()},
        "speedup_per_population": {str(k): v[1] for k, v in pop.items()},
        "mask_mode_samples_per_s_at_density_0.1": modes,
        "autograd_population": autograd_rates,
    }
    best = (*pop[best_k], f"population K={best_k}")
    if parallel and dev.type == "cpu" and torch.get_num_threads() > 1:
        team = result["parallel_populations"] = pairs.parallel(best_k)
        if team["speedup"]["median"] > best[1]["median"]:
            name = f"{team['workers']} populations of K={team['k_per_worker']}, 1 thread each"
            best = (team["samples_per_s"], team["speedup"], name)
    say("float32 GEMM rate")
    gemm_rates.append(gemm_flops(dev))
    result.update(_figures(k1[1], best, gemm_rates, flops_per_sample))
    result["load_average"] = {"before": load_before, "after": load_average(), "cpus": os.cpu_count()}
    result["versions"] = package_versions()
    return result


def _figures(k1_ratio: dict, best: tuple[float, dict, str], gemm_rates: list[float], flops_per_sample: int) -> dict:
    """The headline figures and the targets they meet: K=1 and the best way's speed-ups, the GEMM fraction."""
    best_rate, best_ratio, best_name = best
    # Load only slows a GEMM down, so the faster of the two measurements is the machine's rate.
    flops = max(gemm_rates)
    out = {
        "speedup_vs_reference": k1_ratio["median"],
        "speedup_vs_reference_min_max": [k1_ratio["min"], k1_ratio["max"]],
        "best": best_name,
        "best_speedup_vs_reference": best_ratio["median"],
        "best_speedup_vs_reference_min_max": [best_ratio["min"], best_ratio["max"]],
        "best_network_samples_per_s": best_rate,
        "gemm_flops": flops,
        "gemm_flops_measured": gemm_rates,
        "flops_per_sample": flops_per_sample,
        "gemm_fraction": best_rate * flops_per_sample / flops,
    }
    out["targets"] = {
        name: {"value": out[name], "target": target, "met": out[name] >= target} for name, target in TARGETS.items()
    }
    return out

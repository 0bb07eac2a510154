"""Dense training of one or more seeds: the ``metaprune train`` command as a library function."""

from __future__ import annotations

from dataclasses import dataclass

from metaprune.datasets import load_dataset
from metaprune.networks import build_network, validate_network
from metaprune.provenance import package_versions, to_jsonable
from metaprune.training import MemberResult, ProgressFn, TrainConfig, resolve_device, train_population


@dataclass(frozen=True)
class DenseRun:
    network: str
    dataset: str
    seeds: tuple[int, ...]
    config: TrainConfig
    device: str
    members: tuple[MemberResult, ...]
    seconds: float
    samples_per_s: float

    def to_dict(self) -> dict:
        out = to_jsonable(self)
        out["versions"] = package_versions()
        return out


def train_dense(
    network: str = "lenet_300_100",
    dataset: str = "mnist5k",
    seeds: tuple[int, ...] = (0,),
    config: TrainConfig | None = None,
    device: str | None = None,
    data_root: str | None = None,
    progress: ProgressFn | None = None,
) -> DenseRun:
    """Train one dense network per seed as one population; seed s draws θ0 and the data order from s.

    Members share the data order of the first seed (a population shares one order); with one seed this
    is that seed's own order.
    """
    config = (config or TrainConfig()).validate()
    spec = validate_network(network)
    dev = resolve_device(device)
    data = load_dataset(dataset, data_root=data_root, device=dev)
    nets = [build_network(spec, data.input_shape, data.num_classes, s) for s in seeds]
    res = train_population(nets, data, config, data_seed=seeds[0], device=dev, progress=progress)
    return DenseRun(
        network=spec,
        dataset=dataset,
        seeds=tuple(seeds),
        config=config,
        device=str(dev),
        members=tuple(res.members),
        seconds=res.seconds,
        samples_per_s=res.samples / max(res.seconds, 1e-9),
    )

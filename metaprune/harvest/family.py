"""Families of networks: named sets of (network, dataset, density) harvested member by member.

A learned scorer pays for its harvest only where it is used beyond it, so a family spreads the harvest
over networks of different widths, depths and datasets: ``harvest_family`` harvests every member into its
own store (``harvest.run.harvest``, resumable and lock-protected as one harvest is), under one base config
whose network, dataset and density each member replaces. A family also carries the cheap settings it is
harvested with by default (fewer levels, epochs and seeds than the single-network harvest).

Each member's density is where pruning is hard but has not collapsed: measured, for every member, as a
density at which ``synflow@ums`` keeps about 60-90 % of the dense accuracy (README "Families").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from metaprune.config import TrainConfig
from metaprune.errors import MetapruneError
from metaprune.harvest.config import HarvestConfig, default_store_path
from metaprune.registry import Registry


@dataclass(frozen=True)
class Member:
    """One network of a family, at the density it is harvested and evaluated at."""

    network: str
    dataset: str
    density: float

    @property
    def label(self) -> str:
        return f"{self.network}/{self.dataset}"

    def config(self, base: HarvestConfig) -> HarvestConfig:
        """``base`` with this member's network, dataset and density (validated)."""
        return replace(base, network=self.network, dataset=self.dataset, density=self.density).validate()


@dataclass(frozen=True)
class Family:
    """A named set of members and the cheap harvest settings the family is harvested with by default."""

    name: str
    members: tuple[Member, ...]
    levels: int
    rounds: int
    train: TrainConfig
    seeds: tuple[int, ...]

    def base_config(self, **given) -> HarvestConfig:
        """The harvest config of the family's defaults with the fields ``given`` on top; the member's
        network, dataset and density replace those of the base."""
        fields = {"levels": self.levels, "rounds": self.rounds, "train": self.train, **given}
        return HarvestConfig(**fields)

    def member(self, label: str) -> Member:
        for m in self.members:
            if label in (m.label, m.network):
                return m
        accepted = ", ".join(m.label for m in self.members)
        raise MetapruneError(f"family {self.name!r} has no member {label!r}; accepted: {accepted}")

    def store_paths(self, base: HarvestConfig | None = None, root: str | Path | None = None) -> list[Path]:
        """Every member's default store path under the base config (``datasets/`` unless ``root``)."""
        base = base or self.base_config()
        return [default_store_path(m.config(base), root) for m in self.members]


FAMILIES: Registry[Family] = Registry("family")


def family_stores(
    family: str | Family, root: str | Path | None = None, exclude: Iterable[str] = (), base: HarvestConfig | None = None
) -> list[Path]:
    """The stores of ``family``'s members (their default paths under ``root``, harvested with the family's
    defaults unless ``base``), less the members ``exclude`` names; a missing store is one line naming it."""
    fam = FAMILIES.get(family) if isinstance(family, str) else family
    dropped = {fam.member(label) for label in exclude}
    base = base or fam.base_config()
    paths = [default_store_path(m.config(base), root) for m in fam.members if m not in dropped]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise MetapruneError(
            f"family {fam.name}'s store {missing[0]} is missing ({len(missing)} of {len(paths)}); accepted: run "
            f"`metaprune harvest --family {fam.name}` first (with the same --out), or --data STORE for each store"
        )
    return paths


def register_family(family: Family, help: str) -> Family:
    """Register ``family``; its listing names every member at its density and the cheap defaults."""
    members = ", ".join(f"{m.label} @{m.density:g}" for m in family.members)
    defaults = (
        f"{family.levels} levels x {family.rounds} rounds, <= {family.train.epochs} epochs, {len(family.seeds)} seeds"
    )
    return FAMILIES.register(family.name, family, f"{help}: {members} ({defaults})")


# Cheap defaults: 5 levels of 10 rounds (the single harvest trains 10), at most 30 epochs with patience 5
# (every member peaks well before), 4 seeds per member.
CHEAP_TRAIN = TrainConfig(epochs=30, patience=5)

ZOO = Family(
    "mlp-zoo",
    (
        Member("lenet_300_100", "mnist5k", 0.005),
        Member("mlp:100-50", "mnist5k", 0.01),
        Member("mlp:100-50", "digits", 0.02),
        Member("mlp:200-100", "digits", 0.02),
        Member("mlp:64-64-32", "digits", 0.02),
        Member("mlp:128-64-32", "digits", 0.02),
        Member("mlp:48", "digits", 0.05),
        Member("mlp:32", "digits", 0.05),
        Member("conv2", "digits", 0.001),
        Member("lenet5", "mnist5k", 0.005),
    ),
    levels=5,
    rounds=10,
    train=CHEAP_TRAIN,
    seeds=(0, 1, 2, 3),
)
register_family(ZOO, "eight MLPs of 1-3 hidden layers on mnist5k and digits, conv2 on digits and lenet5 on mnist5k")
# The zoo's MLPs only: its conv nets train slowly on a CPU; the stores are the zoo's own (same configs)
register_family(
    replace(ZOO, name="mlp-zoo-mlps", members=tuple(m for m in ZOO.members if m.network.startswith(("mlp", "lenet_")))),
    "mlp-zoo without its conv nets (the same stores)",
)
register_family(
    Family(
        "tiny",
        (Member("mlp:8-4", "digits", 0.2), Member("mlp:6", "digits", 0.25)),
        levels=2,
        rounds=2,
        train=TrainConfig(epochs=2, patience=2),
        seeds=(0, 1),
    ),
    "two tiny MLPs on digits (tests and a quick try)",
)


ProgressFn = Callable[[dict], None]


def harvest_family(
    family: str | Family,
    seeds: Iterable[int] | None = None,
    *,
    base: HarvestConfig | None = None,
    root: str | Path | None = None,
    progress: ProgressFn | None = None,
    **harvest_options,
) -> list:
    """Harvest every member of ``family`` into its own store (its default path under ``root``).

    ``base`` (default: the family's cheap config) gives every setting but the member's network, dataset
    and density; ``seeds`` default to the family's. Each member is one ``harvest`` call, so an interrupted
    family harvest resumes where it stopped: complete seeds are skipped. ``progress`` receives the
    harvest's events with ``member`` (its label) added, and ``{"event": "member", ...}`` before each.
    Returns the members' ``HarvestResult`` in family order.
    """
    from metaprune.harvest.run import harvest

    fam = FAMILIES.get(family) if isinstance(family, str) else family
    base = base or fam.base_config()
    wanted = tuple(fam.seeds if seeds is None else seeds)
    configs = [m.config(base) for m in fam.members]  # every member checked before any is harvested
    results = []
    for i, (member, config) in enumerate(zip(fam.members, configs, strict=True)):
        emit = _tagged(progress, member.label)
        emit({"event": "member", "index": i, "members": len(fam.members)})
        out = default_store_path(config, root)
        results.append(harvest(config, wanted, out=out, progress=emit, **harvest_options))
    return results


def _tagged(progress: ProgressFn | None, label: str) -> ProgressFn:
    def emit(event: dict) -> None:
        if progress is not None:
            progress({**event, "member": label})

    return emit

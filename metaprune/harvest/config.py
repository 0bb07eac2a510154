"""The harvest config: everything that determines a store's numbers (its identity), and nothing else.

Seeds are not part of the identity (a store's seed plan can be extended), and neither are execution
settings (workers, scheduler, device, data root): they decide where and how fast, not what.
The identity is hashed (``provenance.config_hash``) into the default store name
``datasets/<network>-<dataset>-<hash>.zarr``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from metaprune.config import PER_CLASS, Config, ScheduleConfig, TrainConfig, setting
from metaprune.errors import MetapruneError
from metaprune.provenance import config_hash

if TYPE_CHECKING:
    from metaprune.pruning.method import Method

DEFAULT_STORE_DIR = Path("datasets")

# Defaults (README "Harvest"): 10 levels of SynFlow-IMS from density 1 to 0.005 (each level keeps ~59 %),
# 10 multi-shot rounds inside each level (100 rounds in all, as the 100-round UMS of the SynFlow paper),
# the thesis's training (SGD lr 0.1, batch 64, early stopping with patience 10, checkpoint at the best
# validation loss) capped at 50 epochs per level (LeNet-300-100 on mnist5k peaks at epoch 5-12, so the cap
# rarely binds), and populations of 8 seeds trained together. 8 seeds of LeNet-300-100 / mnist5k take
# about 1-1.5 minutes on 2 idle CPU cores.
DEFAULT_TRAIN = TrainConfig(epochs=50, patience=10)
DEFAULT_TARGET = "synflow@ims"
MAX_WARMUP_EPOCHS = 100.0


def _feature(name: str):
    """A default from ``metaprune.features``, imported when a config is made (the module imports torch)."""

    def default():
        from metaprune import features

        return getattr(features, name)

    return default


# Fields added to the config after stores had been written, each with the value that was in force for a
# store written before it existed (``HarvestConfig.from_stored``): a store without ``warmup_epochs`` (feature
# version 1) ran no warm-up, one without ``trajectory`` (schema version 1) stored no trajectory states. A
# field added later goes here with its old meaning, so an old store never reads as today's default.
ADDED_FIELDS: dict[str, object] = {"warmup_epochs": None, "trajectory": False}


@dataclass(frozen=True)
class HarvestConfig(Config):
    """What a harvest computes. ``density`` is the target density (the CLI's ``--sparsity``)."""

    kind: ClassVar[str] = "harvest"

    network: str = setting("lenet_300_100", "network spec, e.g. lenet_300_100")
    dataset: str = setting("mnist5k", "dataset name")
    density: float = setting(0.005, "target DENSITY: fraction of weights kept (0.005 = 0.5 %)")
    levels: int = setting(10, "training levels of the target")
    rounds: int = setting(10, "multi-shot SynFlow rounds per level")
    train: TrainConfig = setting(factory=lambda: DEFAULT_TRAIN)
    data_seed: int = setting(0, "data order of target training")  # never a task's first seed
    seeds_per_task: int = setting(8, "seeds trained together as one population (one task)")
    per_class: int = setting(PER_CLASS, "pruning batch: examples per class")
    ums_rounds: int = setting(factory=_feature("DEFAULT_UMS_ROUNDS"), help="rounds of the synflow_ums feature")
    # None only in a store harvested before the dynamics features (``ADDED_FIELDS``): no warm-up was run
    warmup_epochs: float | None = setting(3.0, "epochs of the dense warm-up behind the dynamics features")
    scope: str = setting("global", "mask scope: global or layer")
    trajectory: bool = setting(True, "also store the features in each state of the target's way down")
    feature_version: int = setting(factory=_feature("FEATURE_VERSION"))
    features: tuple[str, ...] = setting(factory=_feature("FEATURE_NAMES"))
    # recorded only when set, so the stores of the default target keep their identity (and hash)
    target: str = setting(
        DEFAULT_TARGET,
        "the target: an iterative method (@iss, @ims, or gradual @gss, @gms), e.g. synflow@ims (default), "
        "imp (= magnitude@iss), snip@ims, learned:DIR@ims; multi-shot rounds per level from --rounds",
        recorded_when_set=True,
    )
    paths: bool = setting(
        False,
        "also harvest the path and unit features (feature group paths: flows through each weight's units, "
        "the alive share of its units' weights, the live width of its layer)",
        recorded_when_set=True,
    )
    siblings: int = setting(
        0,
        "the first N planned seeds also get the target's sibling: the same method from the same θ0 with an "
        "independent data order and pruning batch (its final mask is stored: the noise ceiling)",
        recorded_when_set=True,
    )

    def validate(self) -> HarvestConfig:
        """Canonical names and checked values (a one-line error naming the field otherwise)."""
        from metaprune.datasets import DATASETS, dataset_info
        from metaprune.features import FEATURE_NAMES, FEATURE_VERSION, PATH_FEATURES
        from metaprune.networks import build_network, prunable_layout, validate_network
        from metaprune.pruning.masks import check_density, check_density_for_network

        network = validate_network(self.network)
        dataset = DATASETS.canonical(self.dataset)
        for name in ("levels", "rounds", "seeds_per_task", "per_class", "ums_rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MetapruneError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not isinstance(self.trajectory, bool):
            raise MetapruneError(f"trajectory must be true or false, got {self.trajectory!r}")
        if isinstance(self.data_seed, bool) or not isinstance(self.data_seed, int) or self.data_seed < 0:
            raise MetapruneError(f"data-seed must be a non-negative integer, got {self.data_seed!r}")
        if self.levels > 1000 or self.rounds * self.levels > 30000:
            raise MetapruneError(
                f"levels={self.levels}, rounds={self.rounds}: too many steps for the int16 target_round; "
                "accepted: levels <= 1000"
            )
        density = check_density(self.density)
        if not isinstance(self.paths, bool):
            raise MetapruneError(f"paths must be true or false, got {self.paths!r}")
        expected = (*FEATURE_NAMES, *(PATH_FEATURES if self.paths else ()))
        features = expected if self.paths and tuple(self.features) == FEATURE_NAMES else tuple(self.features)
        if features != expected or self.feature_version != FEATURE_VERSION:
            raise MetapruneError(
                f"this metaprune computes features version {FEATURE_VERSION} ({len(expected)} features"
                f"{' with --paths' if self.paths else ''}); the config asks for version {self.feature_version} "
                f"with {len(features)}; accepted: the current feature set (select columns when reading the store "
                "instead)"
            )
        train = self.train.validate()
        warmup = self.warmup_epochs
        if isinstance(warmup, bool) or not isinstance(warmup, int | float) or not 0 < warmup <= MAX_WARMUP_EPOCHS:
            raise MetapruneError(
                f"bad --warmup {self.warmup_epochs!r} (dense epochs behind the dynamics features); accepted: "
                f"0 < warm-up <= {MAX_WARMUP_EPOCHS:g}"
            )
        self.target_schedule().validate()
        siblings = self.siblings
        if isinstance(siblings, bool) or not isinstance(siblings, int) or siblings < 0:
            raise MetapruneError(f"bad --siblings {siblings!r}; accepted: 0 (none) or the number of seeds N >= 1")
        shape, classes = dataset_info(dataset)
        net = build_network(network, shape, classes, 0)
        check_density_for_network(density, net, self.scope)
        _ = prunable_layout(net)
        target = check_target(self.target, int(self.rounds), net, density)
        return replace(
            self,
            network=network,
            dataset=dataset,
            density=density,
            train=train,
            warmup_epochs=float(warmup),
            target=target,
            features=features,
        )

    @classmethod
    def from_stored(cls, stored: dict) -> HarvestConfig:
        """The config a store was harvested with, from its ``config`` attribute. A field the store predates
        takes the value that was in force when it was written (``ADDED_FIELDS``), never today's default."""
        return cls.from_dict({**ADDED_FIELDS, **stored})

    @property
    def warmup_train(self) -> TrainConfig:
        """The training config of the dense warm-up behind the dynamics features: the target's, with room
        for the whole warm-up (the target's per-level epochs cap is not the warm-up's length)."""
        return replace(self.train, epochs=max(int(self.train.epochs), math.ceil(float(self.warmup_epochs))))

    def state_densities(self) -> list[float]:
        """Densities of the trajectory states 1 .. levels - 1 (after that many target levels); [] without one."""
        from metaprune.pruning.schedules import exponential_densities

        if not self.trajectory:
            return []
        return exponential_densities(1.0, float(self.density), int(self.levels))[:-1]

    def identity(self) -> dict:
        """The JSON-able fields that decide the numbers (stored as the ``config`` attribute)."""
        return self.to_dict()

    def short_hash(self) -> str:
        return config_hash(self.identity())

    def to_json(self) -> str:
        return json.dumps(self.identity(), sort_keys=True)

    def target_method(self) -> Method:
        """The target as a method, pruned like any other (``pruning.apply``): ``target`` with ``rounds``
        multi-shot rounds per level when it is multi-shot (the default ``synflow@ims10``; ``imp`` is
        ``magnitude@iss``); its levels and scope are the schedule's."""
        from metaprune.pruning.method import parse_method

        method = parse_method(self.target)
        return replace(method, rounds=int(self.rounds)) if method.multi_shot else method

    def sibling_method(self) -> Method:
        """The target's sibling: the same method from the same θ0 with an independent data order and
        pruning batch (``Method.sibling``)."""
        return self.target_method().variant(ablation="sibling")

    @property
    def sibling_data_seed(self) -> int:
        """The data order of the siblings' training (``seeds.sibling_seed`` of ``data_seed``)."""
        from metaprune.seeds import sibling_seed

        return sibling_seed(int(self.data_seed))

    def target_schedule(self) -> ScheduleConfig:
        """The schedule config the target runs under: ``levels`` levels, ``rounds`` rounds, ``scope``."""
        return ScheduleConfig(rounds=self.rounds, levels=self.levels, scope=self.scope)

    def target_spec(self) -> dict:
        return {
            "method": self.target_method().canonical(),
            "density": self.density,
            "levels": self.levels,
            "rounds_per_level": self.rounds,
            "level_densities": "density ** (l / levels), l = 1..levels",
            "train": asdict(self.train),
            "data_seed": self.data_seed,
            "rewind": "theta0 at every level"
            if self.target_method().rewinds
            else "none: each level trains on from where the last ended (gradual), on data order gradual_order/<level>",
            "target_round": "level at which the weight was removed (1..levels); survivors levels + 1",
            "states": "state s (0 .. levels - 1) = theta0 under the mask after s levels; alive: target_round > s; "
            "state_features hold the features there (s >= 1; state 0 is features)" if self.trajectory else "none",
            "target_mask": "final mask (exactly round(density * n) weights kept)",
            "target_score": f"{self.target_method().label()} scores of its last round (taken on the mask before "
            "that round, so weights pruned earlier score 0 for most scorers), divided by their sum",
            **self._sibling_spec(),
        }

    def _sibling_spec(self) -> dict:
        if not self.siblings:
            return {}
        return {
            "sibling_mask": f"final mask of the target's sibling ({self.sibling_method().canonical()}) for the first "
            f"{self.siblings} planned seeds (absent for the others): the same method from the same θ0, trained "
            f"on the data order of seed {self.sibling_data_seed} (sibling_seed(data_seed)) with the pruning batch "
            "of sibling_seed(seed)",
            "sibling_data_seed": self.sibling_data_seed,
            "sibling_prune_seed": "sibling_seed(seed) = seeds.stream_seed(seed, 'sibling')",
        }


def check_target(text: str, rounds: int, net, density: float) -> str:
    """The canonical spelling of a harvest target (multi-shot rounds in ``rounds``, not spelled), or a
    one-line error: not an iterative method, parts the target cannot have, or a method that cannot prune
    ``net``."""
    from metaprune.pruning.fits import check_method_for_network
    from metaprune.pruning.method import LEARNED, parse_method
    from metaprune.pruning.scorers import SCORERS

    accepted = (
        "accepted: an iterative method SCORER@iss, @ims, @gss or @gms, e.g. synflow@ims, imp, snip@ims, learned:DIR@ims"
    )
    method = parse_method(str(text))
    if not method.iterative:
        raise MetapruneError(f"bad --target {text!r}: schedule {method.schedule!r} is not iterative; {accepted}")
    if method.init != "standard" or method.ablation is not None:
        raise MetapruneError(
            f"bad --target {text!r}: a target trains from the store's θ0 as it is (no ~init or !ablation); {accepted}"
        )
    if method.rounds is not None and method.rounds != rounds:
        raise MetapruneError(
            f"bad --target {text!r}: it spells {method.rounds} rounds per level and --rounds is {rounds}; "
            f"accepted: --rounds {method.rounds}, or the target without rounds"
        )
    check_method_for_network(method, net, density)
    for name in method.scorers:
        fits = SCORERS.get(name).fits if name.startswith(LEARNED) else None  # a model fitted on another network
        if fits is not None:
            fits(net)
    return replace(method, rounds=None).canonical()


def diff_configs(stored: dict, requested: dict, prefix: str = "") -> list[str]:
    """Human-readable differences ``field: store=X, requested=Y`` (nested dicts flattened with '.')."""
    out = []
    for key in sorted(set(stored) | set(requested)):
        a, b = stored.get(key, "<absent>"), requested.get(key, "<absent>")
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(diff_configs(a, b, f"{name}."))
        elif a != b:
            out.append(f"{name}: store={_short(a)}, requested={_short(b)}")
    return out


def _short(value, limit: int = 60) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def default_store_path(config: HarvestConfig, root: str | Path | None = None) -> Path:
    """``datasets/<network>-<dataset>-<hash>.zarr`` (network spec made file-name safe: ':' -> '_')."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.network)
    return Path(root if root is not None else DEFAULT_STORE_DIR) / f"{safe}-{config.dataset}-{config.short_hash()}.zarr"

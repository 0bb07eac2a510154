"""Saved models: ``models/<name>/`` with a payload in a safe format and ``meta.json``.

Writes go to a hidden temporary folder beside the target that is renamed into place, so a model folder is
either complete or absent. An existing name is refused unless ``force``. ``ModelCard`` is the one reader
of ``meta.json``: what a model is (features, preprocessing, networks, seen seeds, intended use) and the
one compatibility check (``check_fits``). Loading reads the card, checks the format and the payload's
sha256, then hands the file to the model's own safe loader (skops with an allow-list, LightGBM text,
safetensors) — nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from metaprune import features as feature_module
from metaprune.errors import MetapruneError
from metaprune.feature_names import DERIVED_FEATURES
from metaprune.files import atomic_path, write_failed
from metaprune.fit.models import REGRESSORS, Regressor
from metaprune.fit.preprocess import TARGETS, per_layer_normalised
from metaprune.harvest.config import HarvestConfig
from metaprune.networks import prunable_layout
from metaprune.provenance import package_versions
from metaprune.pruning.method import IntendedUse, Method, parse_method

if TYPE_CHECKING:
    from metaprune.fit.config import FitConfig
    from metaprune.fit.stores import StoreView

META_FILE = "meta.json"
META_VERSION = 1
PAYLOAD_FORMATS = {cls.payload_format: cls.name for cls in (e.value for e in REGRESSORS)}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or len(name) > 200:
        raise MetapruneError(
            f"bad model name {name!r}; accepted: letters, digits, '.', '_', '+', '-' (not starting with '.' or '-')"
        )
    return name


def save_model(model: Regressor, meta: dict[str, Any], directory: str | Path, *, force: bool = False) -> Path:
    """Write ``model`` and ``meta`` to ``directory`` atomically; returns the directory.

    ``meta`` gets the ``payload`` entry (file, format, sha256 and the model's own payload facts).
    """
    target = Path(directory)
    check_name(target.name)
    if target.exists() and not force:
        raise MetapruneError(f"model {str(target)!r} exists; accepted: another --name, or --force to replace it")
    if target.exists() and not (target / META_FILE).is_file():
        raise MetapruneError(f"{str(target)!r} exists and is not a model folder (no {META_FILE}); not replaced")
    try:
        _write_model(model, meta, target)
    except OSError as exc:
        raise write_failed("model", target, exc) from None
    return target


def _write_model(model: Regressor, meta: dict[str, Any], target: Path) -> None:
    with atomic_path(target, folder=True) as tmp:
        extra = model.save(tmp)
        payload_path = tmp / model.payload_file
        meta = dict(meta)
        meta["meta_version"] = META_VERSION
        meta["payload"] = {
            "file": model.payload_file,
            "format": model.payload_format,
            "sha256": sha256_file(payload_path),
            "bytes": payload_path.stat().st_size,
            **extra,
        }
        with open(tmp / META_FILE, "w") as f:
            json.dump(meta, f, indent=2, sort_keys=False, allow_nan=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())


def _read_meta(directory: Path) -> dict[str, Any]:
    meta_path = directory / META_FILE
    if not directory.is_dir():
        raise MetapruneError(f"model {str(directory)!r} not found; accepted: a folder written by `metaprune fit`")
    if not meta_path.is_file():
        raise MetapruneError(f"{str(directory)!r} is not a model folder (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise MetapruneError(f"cannot read {meta_path}: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("payload"), dict):
        raise MetapruneError(f"{meta_path} has no payload entry; not a metaprune model")
    if meta.get("meta_version") != META_VERSION:
        raise MetapruneError(
            f"{meta_path} has meta_version {meta.get('meta_version')!r}; this metaprune reads {META_VERSION}"
        )
    return meta


def dynamics_features(features: Sequence[str]) -> list[str]:
    """The features (ranked or not) read from a warm-up: a model reading one warms up as its store did."""
    return [f for f in features if f.removeprefix("rank_") in feature_module.DYNAMICS_FEATURES]


def _as_tuple(value: Any) -> tuple[Any, ...]:
    """A field ``fit`` writes as one value for one store and as a list for several."""
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list | tuple) else (value,)


Layout = tuple[tuple[str, int], ...]  # (layer name, size) in flat-axis order


def layer_kind(shape: Sequence[int]) -> str:
    """``linear`` for a weight matrix, ``conv2d`` for a 4-d kernel (the prunable layers' kinds)."""
    return "conv2d" if len(shape) == 4 else "linear"


def _describe(layout: Layout) -> str:
    return "layers " + ", ".join(f"{name} ({size:,})" for name, size in layout)


def _portable_path(path: str | Path) -> str:
    """``path`` relative to the working directory if it lies under it, else its name alone."""
    absolute = Path(path).absolute()
    try:
        return absolute.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return absolute.name


@dataclass(frozen=True)
class StoreRecord:
    """A store a model was fitted on, as it was then. ``path`` is as the fit was given it, relative to the
    working directory where it lies under it: a card names no machine's folders, so a model fitted in a
    checkout can ship with it (its stores are known by their hashes)."""

    path: str
    hash: str  # the store's content hash (``fit.stores.content_hash``)
    config_hash: str  # its harvest config's hash (in its default file name)
    complete_seeds: tuple[int, ...]
    # what the store holds (None in cards written before they were recorded): one model may be fitted on
    # stores of several networks, each harvested at its own density
    network: str | None = None
    dataset: str | None = None
    density: float | None = None
    levels: int | None = None

    @classmethod
    def from_view(cls, view: StoreView) -> StoreRecord:
        return cls(
            _portable_path(view.path), view.content_hash, view.config_hash,
            tuple(view.complete_seeds), view.network, view.dataset, view.density, view.levels,
        )  # fmt: skip

    @classmethod
    def from_meta(cls, entry: dict[str, Any]) -> StoreRecord:
        density, levels = entry.get("density"), entry.get("levels")
        return cls(
            str(entry.get("path")),
            str(entry.get("hash")),
            str(entry.get("config_hash")),
            tuple(int(s) for s in entry.get("complete_seeds") or ()),
            entry.get("network"),
            entry.get("dataset"),
            None if density is None else float(density),
            None if levels is None else int(levels),
        )

    def to_meta(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "hash": self.hash,
            "config_hash": self.config_hash,
            "complete_seeds": list(self.complete_seeds),
            "network": self.network,
            "dataset": self.dataset,
            "density": self.density,
            "levels": self.levels,
        }


@dataclass(frozen=True)
class ModelCard:
    """What a saved model is and where it applies: ``meta.json``'s one writer (``from_fit``, ``to_meta``)
    and one reader (``read``), and the one compatibility check (``check_fits``).

    A card written before a field existed reads with that field's old meaning (``read``); ``meta`` keeps
    the record as read, for display.
    """

    name: str
    path: Path
    model: str
    features: tuple[str, ...]
    feature_spec: str | None
    preprocess: str
    target: str
    networks: tuple[str, ...]
    datasets: tuple[str, ...]
    layouts: tuple[Layout, ...]
    train_seeds: tuple[int, ...]
    test_seeds: tuple[int, ...]
    feature_version: int | None
    intended_use: IntendedUse
    sha256: str  # the payload's ("" before it is saved)
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    options: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    states: str = "dense"  # cards before trajectory states were fitted on θ0 only
    sample_weight: str = "none"
    feature_config: dict[str, Any] = field(default_factory=dict)  # what compute_features needs again
    target_density: float | None = None  # the harvest's density
    levels: int | None = None  # the harvest target's levels
    target_method: Method | None = None  # the harvest target as a method (None: not recorded)
    budget: dict[str, Any] | None = None  # the learned per-layer budget (``fit.budget``)
    stores: tuple[StoreRecord, ...] = ()
    store_hash: str | None = None
    layer_kinds: tuple[str, ...] = ()  # kinds of the layers it was fitted on (); () in older cards: not checked
    seed: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_fit(
        cls,
        path: Path,
        config: FitConfig,
        model: Regressor,
        features: tuple[str, ...],
        views: Sequence[StoreView],
        seeds: tuple[tuple[int, ...], tuple[int, ...]],
        metrics: dict[str, Any],
        budget: dict[str, Any] | None,
        store_hash: str,
    ) -> ModelCard:
        """The card of a model just fitted: ``config``, the ``features`` it reads, the stores' ``views``,
        the (train, test) ``seeds``, its held-out ``metrics`` and learned ``budget``; not saved yet."""
        first = views[0]
        layouts = [json.loads(t) for t in sorted({json.dumps(v.layout) for v in views})]
        warmup = first.feature_config.get("warmup") if dynamics_features(features) else None
        return cls(
            name=path.name,
            path=path,
            model=model.name,
            features=tuple(features),
            feature_spec=config.features if isinstance(config.features, str) else "+".join(config.features),
            preprocess=config.preprocess,
            target=config.target,
            networks=tuple(sorted({v.network for v in views})),
            datasets=tuple(sorted({v.dataset for v in views})),
            layouts=tuple(tuple((str(n), int(s)) for n, s in layout) for layout in layouts),
            train_seeds=tuple(seeds[0]),
            test_seeds=tuple(seeds[1]),
            feature_version=first.feature_version,
            intended_use=config.intended_use(None if warmup is None else float(warmup["epochs"])),
            sha256="",
            options=dict(model.options),
            grid={k: list(v) for k, v in config.grid.items()},
            states=config.states,
            sample_weight=config.sample_weight,
            feature_config=first.feature_config,
            target_density=first.density,
            levels=first.levels,
            target_method=first.target_method,
            budget=budget,
            stores=tuple(StoreRecord.from_view(v) for v in views),
            store_hash=store_hash,
            layer_kinds=tuple(sorted({kind for v in views for kind in v.layer_kinds})),
            seed=config.seed,
            metrics=metrics,
            versions=package_versions(),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def to_meta(self) -> dict[str, Any]:
        """The record ``meta.json`` holds (``save_model`` adds the payload): JSON-able, in reading order."""
        return {
            "name": self.name,
            "model": self.model,
            "options": self.options,
            "grid": self.grid,
            "target": self.target,
            "target_description": TARGETS.get(self.target),
            "feature_spec": self.feature_spec,
            "features": list(self.features),
            "preprocess": self.preprocess,
            "states": self.states,
            "sample_weight": self.sample_weight,
            "per_layer_normalised": self.transferable,
            "networks": list(self.networks),
            "datasets": list(self.datasets),
            "layouts": [[list(layer) for layer in layout] for layout in self.layouts],
            "feature_config": self.feature_config,
            "intended_use": self.intended_use.to_meta(),
            "feature_version": self.feature_version,
            "target_density": self.target_density,
            "levels": self.levels,
            # the target's own ticket, the ceiling a learned scorer is measured against
            "target_method": None if self.target_method is None else {
                "method": self.target_method.canonical(), "levels": self.levels
            },
            "budget": self.budget,  # the target's per-layer split (#learned)
            "stores": [s.to_meta() for s in self.stores],
            "store_hash": self.store_hash,
            "layer_kinds": list(self.layer_kinds),
            "train_seeds": list(self.train_seeds),
            "test_seeds": list(self.test_seeds),
            "seed": self.seed,
            "metrics": self.metrics,
            "versions": self.versions,
            "created": self.created,
        }  # fmt: skip

    @classmethod
    def read(cls, directory: str | Path) -> ModelCard:
        path = Path(directory)
        return cls.from_meta(_read_meta(path), path)

    @classmethod
    def from_meta(cls, meta: dict[str, Any], path: Path) -> ModelCard:
        """The card of a ``meta.json`` record. Older records: ``network``/``dataset`` one value or a list
        (now ``networks``/``datasets``, always lists), no ``target_method`` (the harvest default's target),
        no ``states`` (θ0 only), the feature density as ``target_density`` only."""
        cfg = meta.get("feature_config") or {}
        target = meta.get("target_method") or {}
        levels = target.get("levels", meta.get("levels"))
        stores = meta.get("stores") or []
        return cls(
            name=str(meta.get("name") or path.name),
            path=path,
            model=str(meta.get("model")),
            features=tuple(str(f) for f in _as_tuple(meta.get("features"))),
            feature_spec=meta.get("feature_spec"),
            preprocess=str(meta.get("preprocess")),
            target=str(meta.get("target")),
            networks=tuple(str(n) for n in _as_tuple(meta.get("networks", meta.get("network")))),
            datasets=tuple(str(d) for d in _as_tuple(meta.get("datasets", meta.get("dataset")))),
            layouts=tuple(tuple((str(n), int(s)) for n, s in layout) for layout in meta.get("layouts") or []),
            train_seeds=tuple(int(s) for s in meta.get("train_seeds") or ()),
            test_seeds=tuple(int(s) for s in meta.get("test_seeds") or ()),
            feature_version=meta.get("feature_version"),
            intended_use=IntendedUse.from_meta(meta.get("intended_use")),
            sha256=str((meta.get("payload") or {}).get("sha256", "")),
            meta=meta,
            options=dict(meta.get("options") or {}),
            grid=dict(meta.get("grid") or {}),
            states=str(meta.get("states") or "dense"),
            sample_weight=str(meta.get("sample_weight") or "none"),
            feature_config=dict(cfg),
            target_density=meta.get("target_density"),
            levels=None if levels is None else int(levels),
            target_method=parse_method(target["method"]) if "method" in target else None,
            budget=meta.get("budget"),
            stores=tuple(StoreRecord.from_meta(s) for s in stores if isinstance(s, dict)),
            store_hash=meta.get("store_hash"),
            layer_kinds=tuple(str(k) for k in meta.get("layer_kinds") or ()),
            seed=meta.get("seed"),
            metrics=dict(meta.get("metrics") or {}),
            versions=dict(meta.get("versions") or {}),
            created=meta.get("created"),
            payload=dict(meta.get("payload") or {}),
        )

    @property
    def feature_density(self) -> float | None:
        """The harvest's density, which the density-dependent features were computed at."""
        density = self.feature_config.get("density", self.target_density)
        return None if density is None else float(density)

    @property
    def ums_rounds(self) -> int | None:
        rounds = self.feature_config.get("ums_rounds")
        return None if rounds is None else int(rounds)

    @property
    def target_ticket(self) -> tuple[Method, int | None]:
        """The harvest target's own ticket as a method and its levels: the ceiling of what the model
        imitates (cards written before it was recorded: the harvest default's, 10 rounds per level)."""
        return self.target_method or HarvestConfig().target_method(), self.levels

    @property
    def transferable(self) -> bool:
        """Every input is normalised inside its layer, so the model scores networks it was not fitted on."""
        return per_layer_normalised(self.features, self.preprocess)

    @property
    def seen_seeds(self) -> frozenset[int]:
        return frozenset(self.train_seeds) | frozenset(self.test_seeds)

    def layer_budget(self, layout, density: float) -> list[int]:
        """Per-layer kept counts of the model's learned budget (``#learned``) on ``layout`` at ``density``."""
        from metaprune.fit.budget import predict_counts

        budget = self.budget
        if not budget:
            raise MetapruneError(f"model {self.path} holds no learned budget (fitted before budgets were); refit it")
        here = tuple((layer.name, layer.size) for layer in layout.layers)
        # fitted on one network, the budget has seen one layout; fitted across a family, it predicts a layer's
        # density from its descriptors (share, fans, depth, density), which every network has
        if here not in self.layouts and len(self.layouts) < 2:
            raise MetapruneError(
                f"the learned budget of model {self.path} was fitted on {_describe(self.layouts[0])}, but this "
                f"network has {_describe(here)}; accepted: a budget of this layout, e.g. #from:synflow@ums or #layer"
            )
        return predict_counts(budget, layout, density)

    def feature_settings(self) -> dict[str, Any]:
        """Keyword arguments of ``features.compute_features`` that reproduce the harvest's features."""
        if self.feature_density is None:
            raise MetapruneError(f"model meta of {self.name!r} records no feature density; refit it")
        out: dict[str, Any] = {"density": self.feature_density}
        if self.ums_rounds is not None:
            out["ums_rounds"] = self.ums_rounds
        return out

    def check_fits(self, net: nn.Module) -> None:
        """Refuse a model whose features this metaprune cannot compute, or a network it was not fitted for
        (unless it is transferable)."""
        current_version = feature_module.FEATURE_VERSION
        if self.feature_version is not None and self.feature_version != current_version:
            raise MetapruneError(
                f"model {self.path} was fitted on features of version {self.feature_version}, but "
                f"metaprune.features computes version {current_version} (a feature's definition changed); "
                "refit it on a new harvest"
            )
        available = (*feature_module.COMPUTABLE_FEATURES, *DERIVED_FEATURES)
        missing = [f for f in self.features if f not in available]
        if missing:
            raise MetapruneError(
                f"model {self.path} uses features {', '.join(missing)} that metaprune.features does not compute "
                f"(it computes: {', '.join(available)}); refit the model on a store of the current feature set"
            )
        layers = prunable_layout(net).layers
        layout = tuple((layer.name, layer.size) for layer in layers)
        if layout not in self.layouts and not self.transferable:
            fitted = self.networks[0] if len(self.networks) == 1 else list(self.networks)
            raise MetapruneError(
                f"model {self.path} was fitted on network {fitted} "
                f"({_describe(self.layouts[0]) if self.layouts else 'unknown layers'}) but this network has "
                f"{_describe(layout)}; a model scores another network only when all its features are per-layer "
                "normalised (fit with --preprocess rank, or rank_* features only)"
            )
        # a transferable model scores any network, but only layer kinds it was fitted on: a conv layer's units
        # are channels, its activations pooled over positions, which a model of MLPs never saw
        unseen = [la for la in layers if self.layer_kinds and layer_kind(la.shape) not in self.layer_kinds]
        if unseen:
            raise MetapruneError(
                f"model {self.path} was fitted on {' and '.join(self.layer_kinds)} layers only, but layer "
                f"{unseen[0].name} of this network is {layer_kind(unseen[0].shape)}; accepted: a network of "
                f"{' and '.join(self.layer_kinds)} layers, or a model fitted on stores with such layers"
            )


@dataclass
class LoadedModel:
    card: ModelCard
    model: Regressor

    @property
    def path(self) -> Path:
        return self.card.path

    @property
    def meta(self) -> dict[str, Any]:
        return self.card.meta

    @property
    def features(self) -> tuple[str, ...]:
        return self.card.features

    @property
    def preprocess(self) -> str:
        return self.card.preprocess

    @property
    def sha256(self) -> str:
        return self.card.sha256


def load_model(directory: str | Path) -> LoadedModel:
    """Load a saved model after checking its format and payload sha256."""
    card = ModelCard.read(directory)
    path, payload = card.path, card.payload
    fmt = payload.get("format")
    kind = card.meta.get("model")
    if fmt not in PAYLOAD_FORMATS:
        raise MetapruneError(
            f"model {str(path)!r} has payload format {fmt!r}, which metaprune does not load; "
            f"accepted: {', '.join(PAYLOAD_FORMATS)}"
        )
    if kind not in REGRESSORS or REGRESSORS.get(kind).payload_format != fmt:
        raise MetapruneError(f"model {str(path)!r}: model kind {kind!r} does not match payload format {fmt!r}")
    cls = REGRESSORS.get(kind)
    name = str(payload.get("file", ""))
    if name != cls.payload_file:
        raise MetapruneError(f"model {str(path)!r}: payload file {name!r} is not {cls.payload_file!r}")
    file = path / name
    if not file.is_file():
        raise MetapruneError(f"model {str(path)!r} has no payload file {name!r}")
    digest = sha256_file(file)
    if digest != payload.get("sha256"):
        raise MetapruneError(
            f"payload {file} has sha256 {digest[:12]}…, meta.json records {str(payload.get('sha256'))[:12]}…; "
            "the file changed after it was saved — refit or restore it"
        )
    if not isinstance(card.meta.get("features"), list) or not card.features:
        raise MetapruneError(f"model {str(path)!r}: meta.json lists no features")
    model = cls.load(file, payload, card.options, len(card.features))
    return LoadedModel(card, model)


def model_folders(models_dir: str | Path = "models") -> list[Path]:
    """The folders under ``models_dir`` that hold a model record, by name."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / META_FILE).is_file())


def newest_model(models_dir: str | Path = "models") -> Path | None:
    """The most recently written model folder under ``models_dir``, if any."""
    folders = model_folders(models_dir)
    return max(folders, key=lambda p: (p / META_FILE).stat().st_mtime) if folders else None


def list_models(models_dir: str | Path = "models") -> list[dict[str, Any]]:
    """One summary per folder under ``models_dir`` (broken folders are listed with the reason)."""
    root = Path(models_dir)
    rows: list[dict[str, Any]] = []
    if not root.is_dir():
        return rows
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            card = ModelCard.read(d)
        except MetapruneError as exc:
            rows.append({"name": d.name, "path": str(d), "error": str(exc)})
            continue
        rows.append(_summary(d, card))
    return rows


def _summary(folder: Path, card: ModelCard) -> dict[str, Any]:
    """What ``list_models`` shows of one model."""
    test = card.metrics.get("test", {})
    ref = card.metrics.get("reference", {})
    best_ref = max(ref.items(), key=lambda kv: kv[1].get("jaccard", float("-inf")), default=(None, {}))
    return {
        "name": folder.name,
        "path": str(folder),
        "model": card.model,
        "target": card.target,
        "features": card.feature_spec,
        "n_features": len(card.features),
        "preprocess": card.preprocess,
        "states": card.states,
        "objective": card.options.get("objective") or card.options.get("loss"),
        "use": card.intended_use.suffix(),
        "network": ", ".join(card.networks),
        "dataset": ", ".join(card.datasets),
        "test_seeds": list(card.test_seeds),
        "r2": test.get("r2"),
        "mse": test.get("mse"),
        "jaccard": test.get("jaccard"),
        "spearman": test.get("spearman"),
        "best_reference": best_ref[0],
        "best_reference_jaccard": best_ref[1].get("jaccard"),
        "created": card.created,
    }

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from metaprune import features as feature_module
from metaprune.errors import MetapruneError
from metaprune.files import atomic_path, write_failed
from metaprune.fit.models import REGRESSORS, Regressor
from metaprune.fit.preprocess import per_layer_normalised
from metaprune.networks import prunable_layout
from metaprune.harvest.config import HarvestConfig
from metaprune.pruning.method import IntendedUse, Method, parse_method

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


def _as_tuple(value: Any) -> tuple[Any, ...]:
    """A field ``fit`` writes as one value for one store and as a list for several."""
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list | tuple) else (value,)


Layout = tuple[tuple[str, int], ...]  # (layer name, size) in flat-axis order


def _describe(layout: Layout) -> str:
    return "layers " + ", ".join(f"{name} ({size:,})" for name, size in layout)


@dataclass(frozen=True)
class ModelCard:
    """What a saved model is and where it applies: the one reader of ``meta.json``.

    ``meta`` keeps the whole record (metrics, versions) for display; every decision asks a field or
    ``check_fits``.
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
    feature_density: float | None  # the harvest's density, which density-dependent features were computed at
    ums_rounds: int | None
    feature_version: int | None
    intended_use: IntendedUse
    sha256: str
    meta: dict[str, Any]

    @classmethod
    def read(cls, directory: str | Path) -> ModelCard:
        path = Path(directory)
        meta = _read_meta(path)
        cfg = meta.get("feature_config") or {}
        density = cfg.get("density", meta.get("target_density"))
        rounds = cfg.get("ums_rounds")
        return cls(
            name=str(meta.get("name") or path.name),
            path=path,
            model=str(meta.get("model")),
            features=tuple(str(f) for f in _as_tuple(meta.get("features"))),
            feature_spec=meta.get("feature_spec"),
            preprocess=str(meta.get("preprocess")),
            target=str(meta.get("target")),
            networks=tuple(str(n) for n in _as_tuple(meta.get("network"))),
            datasets=tuple(str(d) for d in _as_tuple(meta.get("dataset"))),
            layouts=tuple(tuple((str(n), int(s)) for n, s in layout) for layout in meta.get("layouts") or []),
            train_seeds=tuple(int(s) for s in meta.get("train_seeds") or ()),
            test_seeds=tuple(int(s) for s in meta.get("test_seeds") or ()),
            feature_density=None if density is None else float(density),
            ums_rounds=None if rounds is None else int(rounds),
            feature_version=meta.get("feature_version"),
            intended_use=IntendedUse.from_meta(meta.get("intended_use")),
            sha256=str(meta["payload"].get("sha256")),
            meta=meta,
        )

    @property
    def target_ticket(self) -> tuple[Method, int | None]:
        """The harvest target's own ticket as a method and its levels: the ceiling of what the model
        imitates (cards written before it was recorded: the harvest default's, 10 rounds per level)."""
        target = self.meta.get("target_method") or {}
        method = parse_method(target["method"]) if "method" in target else HarvestConfig().target_method()
        return method, target.get("levels", self.meta.get("levels"))

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

        budget = self.meta.get("budget")
        if not budget:
            raise MetapruneError(f"model {self.path} holds no learned budget (fitted before budgets were); refit it")
        here = tuple((layer.name, layer.size) for layer in layout.layers)
        if here not in self.layouts:
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
        available = feature_module.FEATURE_NAMES
        missing = [f for f in self.features if f not in available]
        if missing:
            raise MetapruneError(
                f"model {self.path} uses features {', '.join(missing)} that metaprune.features does not compute "
                f"(it computes: {', '.join(available)}); refit the model on a store of the current feature set"
            )
        layout = tuple((layer.name, layer.size) for layer in prunable_layout(net).layers)
        if layout not in self.layouts and not self.transferable:
            fitted = self.networks[0] if len(self.networks) == 1 else list(self.networks)
            raise MetapruneError(
                f"model {self.path} was fitted on network {fitted} "
                f"({_describe(self.layouts[0]) if self.layouts else 'unknown layers'}) but this network has "
                f"{_describe(layout)}; a model scores another network only when all its features are per-layer "
                "normalised (fit with --preprocess rank, or rank_* features only)"
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
    path, meta = card.path, card.meta
    payload = meta["payload"]
    fmt = payload.get("format")
    kind = meta.get("model")
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
    if not isinstance(meta.get("features"), list) or not card.features:
        raise MetapruneError(f"model {str(path)!r}: meta.json lists no features")
    model = cls.load(file, payload, meta.get("options", {}), len(card.features))
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
        meta = card.meta
        test = (meta.get("metrics") or {}).get("test", {})
        ref = (meta.get("metrics") or {}).get("reference", {})
        best_ref = max(ref.items(), key=lambda kv: kv[1].get("jaccard", float("-inf")), default=(None, {}))
        rows.append(
            {
                "name": d.name,
                "path": str(d),
                "model": meta.get("model"),
                "target": meta.get("target"),
                "features": card.feature_spec,
                "n_features": len(card.features),
                "preprocess": meta.get("preprocess"),
                "states": meta.get("states", "dense"),
                "objective": (meta.get("options") or {}).get("objective") or (meta.get("options") or {}).get("loss"),
                "use": card.intended_use.suffix(),
                "network": meta.get("network"),
                "dataset": meta.get("dataset"),
                "test_seeds": meta.get("test_seeds"),
                "r2": test.get("r2"),
                "mse": test.get("mse"),
                "jaccard": test.get("jaccard"),
                "spearman": test.get("spearman"),
                "best_reference": best_ref[0],
                "best_reference_jaccard": best_ref[1].get("jaccard"),
                "created": meta.get("created"),
            }
        )
    return rows

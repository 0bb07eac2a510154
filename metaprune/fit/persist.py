"""Saved models: ``models/<name>/`` with a payload in a safe format and ``meta.json``.

Writes go to a hidden temporary folder beside the target that is renamed into place, so a model folder is
either complete or absent. An existing name is refused unless ``force``. Loading reads ``meta.json``,
checks the format and the payload's sha256, then hands the file to the model's own safe loader (skops with
an allow-list, LightGBM text, safetensors) — nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaprune.errors import MetapruneError
from metaprune.fit.models import REGRESSORS, Regressor

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
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
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
        old = None
        if target.exists():
            old = target.parent / f".old-{target.name}-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory)
    meta_path = path / META_FILE
    if not path.is_dir():
        raise MetapruneError(f"model {str(path)!r} not found; accepted: a folder written by `metaprune fit`")
    if not meta_path.is_file():
        raise MetapruneError(f"{str(path)!r} is not a model folder (no {META_FILE})")
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


@dataclass
class LoadedModel:
    path: Path
    meta: dict[str, Any]
    model: Regressor

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.meta["features"])

    @property
    def preprocess(self) -> str:
        return str(self.meta["preprocess"])

    @property
    def sha256(self) -> str:
        return str(self.meta["payload"]["sha256"])


def load_model(directory: str | Path) -> LoadedModel:
    """Load a saved model after checking its format and payload sha256."""
    path = Path(directory)
    meta = read_meta(path)
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
    features = meta.get("features")
    if not isinstance(features, list) or not features:
        raise MetapruneError(f"model {str(path)!r}: meta.json lists no features")
    model = cls.load(file, payload, meta.get("options", {}), len(features))
    return LoadedModel(path, meta, model)


def list_models(models_dir: str | Path = "models") -> list[dict[str, Any]]:
    """One summary per folder under ``models_dir`` (broken folders are listed with the reason)."""
    root = Path(models_dir)
    rows: list[dict[str, Any]] = []
    if not root.is_dir():
        return rows
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            meta = read_meta(d)
        except MetapruneError as exc:
            rows.append({"name": d.name, "path": str(d), "error": str(exc)})
            continue
        test = (meta.get("metrics") or {}).get("test", {})
        ref = (meta.get("metrics") or {}).get("reference", {})
        best_ref = max(ref.items(), key=lambda kv: kv[1].get("jaccard", float("-inf")), default=(None, {}))
        rows.append(
            {
                "name": d.name,
                "path": str(d),
                "model": meta.get("model"),
                "target": meta.get("target"),
                "features": meta.get("feature_spec"),
                "n_features": len(meta.get("features", [])),
                "preprocess": meta.get("preprocess"),
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

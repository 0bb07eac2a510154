"""What every output records: config, seeds, package versions, and a stable config hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from importlib import metadata
from typing import Any

PACKAGES = ("metaprune", "torch", "torchvision", "numpy", "scikit-learn", "lightgbm", "xarray", "zarr")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def to_jsonable(obj: Any) -> Any:
    """Dataclasses as dicts, tuples as lists; a value that spells itself as text (a parsed ``Method``:
    ``canonical()``) as that text, so a config of parsed values records what was typed. A field marked
    ``recorded_when_set`` in its metadata is left out while it holds its default, so adding such a field
    keeps the records (and hashes) of configs made before it existed."""
    spell = getattr(obj, "canonical", None)
    if callable(spell) and not isinstance(obj, type):
        return spell()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_jsonable(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not (f.metadata.get("recorded_when_set") and getattr(obj, f.name) == f.default)
        }
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float | int | str | bool) or obj is None:
        return obj
    return str(obj)


def config_hash(obj: Any, length: int = 8) -> str:
    text = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]

"""The results directory of an evaluation: committed units, resume, and the tidy consolidated table.

Layout (``results/<name>/``)::

    config.json                     the evaluation's identity (network, dataset, training, schedule …)
    units/<seed>/<unit>.json        one committed row per (seed, method, density); written atomically
    units/<seed>/<unit>.safetensors the ticket's mask (packed bits) and the initial weights it keeps
    results.csv, results.zarr       the tidy table (one row per seed × method × density), rebuilt on demand

A unit is visible only once its JSON exists (temp file + rename), so an interrupted evaluation resumes
where it stopped and never sees half-written work.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from metaprune.errors import StoreError
from metaprune.files import atomic_path, check_folder_writable, write_bytes, write_failed
from metaprune.provenance import package_versions, to_jsonable
from metaprune.pruning.method import Unit, parse_method, slug

# Fields that define what a results directory measures; methods, densities and seeds may grow.
IDENTITY_FIELDS = ("network", "dataset", "train", "schedule", "per_class")


def _models(config_json: dict) -> set[str]:
    """The learned models a results config evaluates: a directory answers for one set of them, which may
    grow (a model added beside the others) but not be swapped for another set."""
    return {m for text in config_json.get("methods", []) for m in parse_method(text).learned_models}


def _check_models_unchanged(path: Path, old: dict[str, str], new: dict[str, str]) -> None:
    """One line when a model the directory holds units of was refitted in place (its payload changed)."""
    changed = sorted(m for m in old.keys() & new.keys() if old[m] and new[m] and old[m] != new[m])
    if changed:
        raise StoreError(
            f"model {changed[0]} changed since results directory {path} committed its units (payload sha256 "
            f"{old[changed[0]][:12]} then, {new[changed[0]][:12]} now); accepted: a new --out, or --force to start over"
        )


def unit_name(unit: Unit | str, density: float) -> str:
    """The file name (without suffix) of a unit at ``density``; a unit may be given by its canonical spelling."""
    return f"{slug(str(unit))}__d{density:.6g}"


@dataclass
class ResultsDir:
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def open_or_create(
        self, config_json: dict, force: bool = False, preset: str | None = None, models: dict[str, str] | None = None
    ) -> None:
        """Create the directory, or check that an existing one measures the same thing.

        A directory made by a preset answers that preset's question: a run of another preset is refused,
        and so is a run of the same preset for a disjoint set of learned models (a model added beside
        the others grows it). Runs that name their methods (no preset) grow any directory of the same
        identity, so variants can be added beside a preset's. ``models`` ({model folder: payload sha256})
        are recorded: a model refitted in place since its units were committed is refused, since a resumed
        run would mix the old model's tickets with the new one's.
        """
        check_folder_writable(self.path, "results folder", "--out")
        try:
            self._open_or_create(config_json, force, preset, dict(models or {}))
        except OSError as exc:
            raise write_failed("results folder", self.path, exc) from None

    def _open_or_create(self, config_json: dict, force: bool, preset: str | None, models: dict[str, str]) -> None:
        if self.path.exists() and force:
            shutil.rmtree(self.path)
        if self.path.exists() and any(self.path.iterdir()):
            old = self._existing(config_json)
            old_preset = old.get("preset")
            if preset is not None and old_preset is not None and preset != old_preset:
                raise StoreError(
                    f"results directory {self.path} holds preset {old_preset!r}, not {preset!r}; accepted: "
                    "the same preset, a new --out, or --force to start over"
                )
            old_models, new_models = _models(old["config"]), _models(config_json)
            if preset is not None and old_models and new_models and not old_models & new_models:
                raise StoreError(
                    f"results directory {self.path} evaluates the learned models {', '.join(sorted(old_models))}, "
                    f"not {', '.join(sorted(new_models))}; accepted: the same models, a new --out, or --force "
                    "to start over"
                )
            _check_models_unchanged(self.path, old.get("models", {}), models)
            models = {**old.get("models", {}), **models}
            preset = old_preset or preset
            merged = dict(old["config"])
            for key in ("methods", "densities", "seeds", "dense_inits"):
                merged[key] = list(dict.fromkeys([*old["config"].get(key, []), *config_json.get(key, [])]))
            config_json = {**config_json, **{k: merged[k] for k in ("methods", "densities", "seeds", "dense_inits")}}
        payload = {"config": config_json, "preset": preset, "models": models, "versions": package_versions()}
        write_bytes(self.config_path, json.dumps(payload, indent=2).encode())

    def _existing(self, config_json: dict) -> dict:
        """The existing directory's config.json, refused unless it measures what ``config_json`` does."""
        if not self.config_path.exists():
            raise StoreError(
                f"{self.path} exists but is not a metaprune results directory (no config.json); "
                "accepted: a new --out path, or --force to replace it"
            )
        old = json.loads(self.config_path.read_text())
        diff = [f for f in IDENTITY_FIELDS if old.get("config", {}).get(f) != config_json.get(f)]
        if diff:
            raise StoreError(
                f"results directory {self.path} was made with a different configuration "
                f"({', '.join(diff)} differ); accepted: the same settings, a new --out, or --force to start over"
            )
        return old

    def config(self) -> dict:
        if not self.config_path.exists():
            raise StoreError(f"{self.path} is not a metaprune results directory (no config.json)")
        return json.loads(self.config_path.read_text())["config"]

    def unit_path(self, seed: int, name: str) -> Path:
        return self.path / "units" / str(seed) / f"{name}.json"

    def done(self, seed: int, name: str) -> bool:
        return self.unit_path(seed, name).exists()

    def commit(self, seed: int, name: str, row: dict, mask: torch.Tensor | None, kept_weights: torch.Tensor | None):
        """Write the unit's tensors first, its row last: the row's existence is the commit."""
        try:
            self._commit(seed, name, row, mask, kept_weights)
        except OSError as exc:
            raise write_failed(f"unit {name} of seed {seed} to the results folder", self.path, exc) from None

    def _commit(self, seed: int, name: str, row: dict, mask: torch.Tensor | None, kept_weights) -> None:
        if mask is not None:
            from safetensors.torch import save as st_save

            bits = np.packbits(mask.cpu().numpy().astype(np.uint8))
            tensors = {"mask_bits": torch.from_numpy(bits), "n": torch.tensor([mask.numel()])}
            if kept_weights is not None:
                tensors["kept_weights"] = kept_weights.detach().float().cpu().contiguous()
            write_bytes(self.unit_path(seed, name).with_suffix(".safetensors"), st_save(tensors))
        write_bytes(self.unit_path(seed, name), json.dumps(to_jsonable(row)).encode())

    def rows(self) -> pd.DataFrame:
        # A killed writer can leave a ``.*.partial`` file behind; only committed ``*.json`` count.
        files = sorted(f for f in (self.path / "units").glob("*/*.json") if not f.name.startswith("."))
        data = [json.loads(f.read_text()) for f in files]
        return pd.DataFrame(data)

    def mask(self, seed: int, name: str) -> torch.Tensor | None:
        path = self.unit_path(seed, name).with_suffix(".safetensors")
        if not path.exists():
            return None
        from safetensors.torch import load_file

        t = load_file(str(path))
        n = int(t["n"][0])
        return torch.from_numpy(np.unpackbits(t["mask_bits"].numpy())[:n].astype(bool))

    def kept_weights(self, seed: int, name: str) -> torch.Tensor | None:
        path = self.unit_path(seed, name).with_suffix(".safetensors")
        if not path.exists():
            return None
        from safetensors.torch import load_file

        return load_file(str(path)).get("kept_weights")

    def consolidate(self) -> pd.DataFrame:
        """Rewrite results.csv and results.zarr from the committed units (both readable by pandas)."""
        df = self.rows()
        if df.empty:
            return df
        df = df.sort_values(["density", "method", "seed"], kind="stable").reset_index(drop=True)
        with atomic_path(self.path / "results.csv") as tmp:
            df.to_csv(tmp, index=False)
        import xarray as xr

        flat = df.copy()
        for col in flat.columns:
            if flat[col].dtype == object:
                flat[col] = flat[col].astype(str)
        ds = xr.Dataset.from_dataframe(flat.rename_axis("row"))
        import warnings

        with warnings.catch_warnings(), atomic_path(self.path / "results.zarr", folder=True) as tmp:
            # zarr v3 warns that consolidated metadata is not in its spec; xarray reads it fastest.
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
            ds.to_zarr(tmp, mode="w", consolidated=True)
        return df

"""Regressors behind one registry and one fit/predict/save/load interface.

Every model learns ``target`` (in [0, 1]) from the preprocessed features of single weights. Data reach a
model through ``TrainData``: either streamed seed by seed (``passes``; memory = one seed) or as a
bounded row subsample (``sample``; memory = ``max_rows`` rows), so no model ever holds a whole store.

| model | how it sees the data | payload |
|---|---|---|
| ``linear`` | least squares by normal equations XᵀX, Xᵀy accumulated seed by seed | skops |
| ``sgd`` | ``SGDRegressor.partial_fit`` seed by seed, ``epochs`` passes | skops |
| ``tree`` | ``DecisionTreeRegressor`` on at most ``max_rows`` rows, depth/leaf caps | skops |
| ``forest`` | ``RandomForestRegressor`` on at most ``max_rows`` rows, 50 trees of depth ≤ 12 | skops |
| ``mlp`` | PyTorch F-64-32-1 ReLU, sigmoid output, MSE; mini-batches seed by seed | safetensors |
| ``lightgbm`` | gradient boosting on at most ``max_rows`` rows | LightGBM text |

Payloads are never pickles: skops files are loaded with an explicit allow-list of the types each model
may contain (anything else is refused), LightGBM models are its text format, the MLP is safetensors
plus a JSON architecture.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from metaprune.errors import MetapruneError
from metaprune.registry import Registry
from metaprune.seeds import stream_seed


class TrainData(Protocol):
    """What a model sees of the training seeds."""

    n_features: int
    rows: int  # training rows over all training seeds

    def passes(self, n: int, *, shuffle: bool = True) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``n`` passes over the training seeds, one seed at a time: yields (pass, X float32, y float32)."""
        ...

    def sample(self, max_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """At most ``max_rows`` rows drawn uniformly without replacement (the same share from every seed)."""
        ...

    def weighted_passes(
        self, n: int, *, shuffle: bool = True
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]]:
        """As ``passes``, yielding each row's sample weight too (None when the fit is unweighted)."""
        ...

    def weighted_sample(self, max_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """As ``sample``, with each row's sample weight (None when the fit is unweighted)."""
        ...

    def query_sample(self, max_rows: int, query_rows: int = 10_000) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Ranking queries (one per network state and layer, at most ``query_rows`` rows each): X, integer
        relevance (levels outlived from the state), query sizes."""
        ...

    def report(self, stage: str, done: int, total: int) -> None: ...


# ------------------------------------------------------------------------------------------- options


def parse_options(defaults: Mapping[str, Any], given: Mapping[str, Any] | None, model: str) -> dict[str, Any]:
    """``defaults`` overridden by ``given`` (values may be strings from the CLI; converted to the default's
    type). An unknown key is a one-line error listing the model's options."""
    out = dict(defaults)
    for key, value in (given or {}).items():
        k = key.replace("-", "_")
        if k not in defaults:
            raise MetapruneError(
                f"model {model!r} has no option {key!r}; accepted: "
                + ", ".join(f"{n}={v}" for n, v in defaults.items())
            )
        kind = type(defaults[k])
        try:
            if kind is bool:
                v = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
            elif kind is int:
                v = int(value)
            elif kind is float:
                v = float(value)
            else:
                v = str(value)
        except (TypeError, ValueError):
            raise MetapruneError(
                f"option {key}={value!r} of model {model!r} is not a {kind.__name__}; default: {defaults[k]!r}"
            ) from None
        out[k] = v
    for k in ("max_rows", "epochs", "batch_size", "rounds", "n_estimators", "max_depth", "min_samples_leaf"):
        if k in out and (not isinstance(out[k], int) or out[k] < 1):
            raise MetapruneError(f"option {k} of model {model!r} must be a positive integer, got {out[k]!r}")
    for k in ("lr", "learning_rate", "eta0"):
        if k in out and isinstance(out[k], int | float) and not out[k] > 0:
            raise MetapruneError(f"option {k} of model {model!r} must be positive, got {out[k]!r}")
    return out


# --------------------------------------------------------------------------------------------- base


class Regressor(ABC):
    """One fit/predict/save/load interface for every model."""

    name: ClassVar[str]
    payload_file: ClassVar[str]
    weighted: ClassVar[bool] = False  # accepts sample weights (``fit --sample-weight``)
    payload_format: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]
    summary: ClassVar[str]

    def __init__(
        self, options: Mapping[str, Any] | None = None, seed: int = 0, n_features: int = 0, threads: int = 1
    ) -> None:
        self.options = parse_options(self.defaults, options, self.name)
        self.seed = int(seed)
        self.n_features = int(n_features)
        self.threads = max(1, int(threads))  # for forest/LightGBM when their option jobs is 0
        self.rows_seen = 0  # rows processed while fitting (counting every pass)
        self.rows_used = 0  # distinct rows the model learned from

    @abstractmethod
    def fit(self, data: TrainData) -> None: ...

    libraries: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def import_libraries(cls) -> None:
        """Import the model's libraries (so a fit's timing does not include them)."""
        import importlib

        for name in cls.libraries:
            importlib.import_module(name)

    @abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray: ...

    def rank_scores(self, x: np.ndarray) -> np.ndarray:
        """Scores that rank as ``predict`` does, without its saturation: what a learned scorer keeps the
        top of. A sigmoid in float32 is exactly 1.0 beyond a logit of about 17, so confident weights would
        tie and be kept by the tie-break's coin; models with such an output rank by the logit."""
        return self.predict(x)

    def predict_and_rank(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(``predict``, ``rank_scores``): what R² is taken on, and what a ranking metric must rank by,
        since the learned scorer keeps the top of ``rank_scores``."""
        pred = self.predict(x)
        same = type(self).rank_scores is Regressor.rank_scores
        return pred, pred if same else self.rank_scores(x)

    @abstractmethod
    def save(self, directory: Path) -> dict[str, Any]:
        """Write the payload to ``directory / payload_file``; returns extra payload metadata."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path, payload: Mapping[str, Any], options: Mapping[str, Any], n_features: int) -> Regressor:
        """Read a payload written by ``save`` (its sha256 has already been checked)."""

    def random_state(self) -> int:
        return stream_seed(self.seed, "fit", 0) % (2**31 - 1)

    def _check_x(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise MetapruneError(
                f"model {self.name!r} takes {self.n_features} features, got an array of shape {tuple(x.shape)}"
            )
        return x


REGRESSORS: Registry[type[Regressor]] = Registry("regressor")


def register(cls: type[Regressor]) -> type[Regressor]:
    REGRESSORS.register(cls.name, cls, cls.summary)
    return cls


def make_regressor(
    name: str, options: Mapping[str, Any] | None, seed: int, n_features: int, threads: int = 1
) -> Regressor:
    return REGRESSORS.get(name)(options, seed, n_features, threads)


# --------------------------------------------------------------------------------------- skops models

# Types a skops payload of each class may contain beyond skops' default-trusted ones (scikit-learn
# estimators, numpy arrays and builtins). Anything else in the file is refused before loading.
SKOPS_ALLOWED: dict[str, tuple[str, ...]] = {
    "sklearn.linear_model._base.LinearRegression": (),
    "sklearn.linear_model._stochastic_gradient.SGDRegressor": (),
    "sklearn.tree._classes.DecisionTreeRegressor": ("sklearn.tree._tree.Tree",),
    "sklearn.ensemble._forest.RandomForestRegressor": ("sklearn.tree._tree.Tree",),
}


def _qualname(obj: object) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def skops_dump(estimator: object, path: Path) -> dict[str, Any]:
    import skops.io as sio

    cls = _qualname(estimator)
    if cls not in SKOPS_ALLOWED:  # pragma: no cover - a programming error
        raise RuntimeError(f"{cls} is not in the skops allow-list")
    sio.dump(estimator, path)
    return {"class": cls, "trusted": list(SKOPS_ALLOWED[cls])}


def skops_load(path: Path, expected_class: str) -> Any:
    """Load a skops payload whose top-level object must be ``expected_class``; any type outside the
    allow-list is refused, and ``trusted=True`` is never used."""
    import skops.io as sio

    if expected_class not in SKOPS_ALLOWED:
        raise MetapruneError(
            f"model payload class {expected_class!r} is not one metaprune loads; accepted: {', '.join(SKOPS_ALLOWED)}"
        )
    allowed = list(SKOPS_ALLOWED[expected_class])
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # a corrupt zip, a bad schema
        raise MetapruneError(f"cannot read skops payload {path}: {exc}") from None
    extra = sorted(set(untrusted) - set(allowed))
    if extra:
        raise MetapruneError(
            f"skops payload {path} contains types outside the allow-list: {', '.join(extra)}; refused "
            f"(allowed beyond scikit-learn/numpy defaults: {', '.join(allowed) or 'none'})"
        )
    try:
        obj = sio.load(path, trusted=allowed)
    except Exception as exc:
        raise MetapruneError(f"cannot load skops payload {path}: {exc}") from None
    if _qualname(obj) != expected_class:
        raise MetapruneError(f"skops payload {path} holds a {_qualname(obj)}, expected {expected_class}")
    return obj


class _SkopsModel(Regressor):
    payload_file = "model.skops"
    payload_format = "skops"
    libraries = ("sklearn.linear_model", "sklearn.tree", "sklearn.ensemble", "skops.io")

    def __init__(self, options=None, seed=0, n_features=0, threads=1) -> None:
        super().__init__(options, seed, n_features, threads)
        self.estimator: Any = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(self._check_x(x)), dtype=np.float32)

    def save(self, directory: Path) -> dict[str, Any]:
        return skops_dump(self.estimator, directory / self.payload_file)

    @classmethod
    def load(cls, path, payload, options, n_features):
        model = cls(options, 0, n_features)
        model.estimator = skops_load(path, str(payload.get("class", "")))
        return model


@register
class LinearModel(_SkopsModel):
    name = "linear"
    summary = "least squares, streamed: normal equations XᵀX, Xᵀy accumulated seed by seed"
    defaults: ClassVar[dict[str, Any]] = {"ridge": 1e-9}

    def fit(self, data: TrainData) -> None:
        from sklearn.linear_model import LinearRegression

        f = data.n_features
        a = np.zeros((f + 1, f + 1), dtype=np.float64)
        b = np.zeros(f + 1, dtype=np.float64)
        for _, x, y in data.passes(1, shuffle=False):
            xa = np.empty((x.shape[0], f + 1), dtype=np.float64)
            xa[:, :f] = x
            xa[:, f] = 1.0
            a += xa.T @ xa
            b += xa.T @ y.astype(np.float64)
            self.rows_seen += x.shape[0]
        self.rows_used = self.rows_seen
        # a tiny ridge (relative to the mean diagonal) keeps constant or collinear features solvable
        lam = float(self.options["ridge"]) * max(float(np.trace(a[:f, :f])) / max(f, 1), 1e-12)
        reg = a.copy()
        reg[np.arange(f), np.arange(f)] += lam
        coef = np.linalg.lstsq(reg, b, rcond=None)[0]
        est = LinearRegression()
        est.coef_ = coef[:f].astype(np.float64)
        est.intercept_ = float(coef[f])
        est.n_features_in_ = f
        est.rank_ = int(np.linalg.matrix_rank(reg[:f, :f])) if f else 0
        est.singular_ = np.zeros(0)
        self.estimator = est


@register
class SGDModel(_SkopsModel):
    name = "sgd"
    summary = "SGDRegressor.partial_fit seed by seed (scikit-learn defaults), `epochs` passes"
    defaults: ClassVar[dict[str, Any]] = {
        "epochs": 3,
        "alpha": 1e-4,
        "eta0": 0.01,
        "learning_rate": "invscaling",
        "penalty": "l2",
    }

    def fit(self, data: TrainData) -> None:
        from sklearn.linear_model import SGDRegressor

        o = self.options
        est = SGDRegressor(
            alpha=o["alpha"],
            eta0=o["eta0"],
            learning_rate=o["learning_rate"],
            penalty=o["penalty"],
            random_state=self.random_state(),
        )
        for _, x, y in data.passes(o["epochs"]):
            est.partial_fit(x, y)
            self.rows_seen += x.shape[0]
        self.rows_used = data.rows
        if not np.all(np.isfinite(est.coef_)):
            raise MetapruneError("sgd diverged (non-finite coefficients); accepted: a smaller --option eta0=…")
        self.estimator = est


@register
class TreeModel(_SkopsModel):
    name = "tree"
    weighted = True
    summary = "DecisionTreeRegressor on at most max_rows rows (default 1,000,000), depth ≤ 12, leaves ≥ 100"
    defaults: ClassVar[dict[str, Any]] = {"max_depth": 12, "min_samples_leaf": 100, "max_rows": 1_000_000}

    def fit(self, data: TrainData) -> None:
        from sklearn.tree import DecisionTreeRegressor

        o = self.options
        x, y, w = data.weighted_sample(o["max_rows"])
        est = DecisionTreeRegressor(
            max_depth=o["max_depth"], min_samples_leaf=o["min_samples_leaf"], random_state=self.random_state()
        )
        est.fit(x, y, sample_weight=w)
        self.rows_seen = self.rows_used = x.shape[0]
        self.estimator = est


@register
class ForestModel(_SkopsModel):
    name = "forest"
    weighted = True
    summary = (
        "RandomForestRegressor, capped: 50 trees, depth ≤ 12, 10 % of at most max_rows rows "
        "(default 1,000,000) per tree (the thesis's default forest took 2 GB)"
    )
    defaults: ClassVar[dict[str, Any]] = {
        "n_estimators": 50,
        "max_depth": 12,
        "min_samples_leaf": 50,
        "max_samples": 0.1,
        "max_features": 1.0,
        "max_rows": 1_000_000,
        "jobs": 0,
    }

    def fit(self, data: TrainData) -> None:
        from sklearn.ensemble import RandomForestRegressor

        o = self.options
        if not 0 < o["max_samples"] <= 1 or not 0 < o["max_features"] <= 1:
            raise MetapruneError("forest options max_samples and max_features are fractions in (0, 1]")
        x, y, w = data.weighted_sample(o["max_rows"])
        est = RandomForestRegressor(
            n_estimators=o["n_estimators"],
            max_depth=o["max_depth"],
            min_samples_leaf=o["min_samples_leaf"],
            max_samples=o["max_samples"] if x.shape[0] > 1 else None,
            max_features=o["max_features"],
            n_jobs=int(o["jobs"]) or self.threads,
            random_state=self.random_state(),
        )
        est.fit(x, y, sample_weight=w)
        est.n_jobs = 1  # prediction (inside a pruning loop) stays on one thread
        self.rows_seen = self.rows_used = x.shape[0]
        self.estimator = est


# ----------------------------------------------------------------------------------------- LightGBM

LIGHTGBM_OBJECTIVES = {
    "regression": "least squares on the target (default)",
    "cross_entropy": "cross-entropy on the target in [0, 1] (predictions are probabilities)",
    "binary": "binary log-loss on a 0/1 target (--target survive or mask)",
    "lambdarank": "LambdaRank (NDCG) on queries of at most 10,000 alive weights per (seed, state, layer); "
    "relevance = target levels the weight outlives from its state (the --target is not used)",
}
BINARY_TARGETS = ("survive", "mask")


@register
class LightGBMModel(Regressor):
    """Gradient boosting. ``lambdarank`` cannot take one query per network (266,200 weights for
    LeNet-300-100: LightGBM refuses queries above 10,000 rows, and its pairwise lambdas cost O(n²) per
    query), so its queries are at most 10,000 alive weights of one layer in one state of one seed, drawn
    uniformly: a ranking inside a layer, which is what a per-layer budget asks of a scorer."""

    name = "lightgbm"
    weighted = True
    summary = (
        "LightGBM gradient boosting (objective regression | cross_entropy | binary | lambdarank) on at most "
        "max_rows rows (default 2,000,000), 200 rounds of 63 leaves"
    )
    payload_file = "model.txt"
    payload_format = "lightgbm-text"
    libraries = ("lightgbm",)
    defaults: ClassVar[dict[str, Any]] = {
        "objective": "regression",
        "rounds": 200,
        "learning_rate": 0.05,
        "num_leaves": 63,
        "min_data_in_leaf": 100,
        "feature_fraction": 1.0,
        "max_rows": 2_000_000,
        "jobs": 0,
    }

    def __init__(self, options=None, seed=0, n_features=0, threads=1) -> None:
        super().__init__(options, seed, n_features, threads)
        if self.options["objective"] not in LIGHTGBM_OBJECTIVES:
            raise MetapruneError(
                f"unknown lightgbm objective {self.options['objective']!r}; accepted: "
                + ", ".join(LIGHTGBM_OBJECTIVES)
            )
        self.booster: Any = None
        self._compiled: Any = None  # CompiledTrees, False where LightGBM's own predictor serves, None: not tried

    def params(self) -> dict[str, Any]:
        o = self.options
        return {
            "objective": o["objective"],
            "learning_rate": o["learning_rate"],
            "num_leaves": o["num_leaves"],
            "min_data_in_leaf": o["min_data_in_leaf"],
            "feature_fraction": o["feature_fraction"],
            "num_threads": int(o["jobs"]) or self.threads,
            "seed": self.random_state(),
            **({"lambdarank_truncation_level": 64, "label_gain": list(range(0, 64))}
               if o["objective"] == "lambdarank" else {}),
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }

    def fit(self, data: TrainData) -> None:
        import lightgbm as lgb

        if self.options["objective"] == "lambdarank":
            x, y, groups = data.query_sample(self.options["max_rows"])
            ds = lgb.Dataset(x, y, group=groups, free_raw_data=True, params={"verbosity": -1})
        else:
            x, y, w = data.weighted_sample(self.options["max_rows"])
            ds = lgb.Dataset(x, y, weight=w, free_raw_data=True, params={"verbosity": -1})
        rounds = self.options["rounds"]

        def callback(env: Any) -> None:
            data.report("boosting", env.iteration + 1, rounds)

        self.booster = lgb.train(self.params(), ds, num_boost_round=rounds, callbacks=[callback])
        self.rows_used = x.shape[0]
        self.rows_seen = x.shape[0] * rounds

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = self._check_x(x)
        threads = int(self.options["jobs"]) or self.threads
        return np.asarray(self.booster.predict(x, num_threads=threads), dtype=np.float32)

    def rank_scores(self, x: np.ndarray) -> np.ndarray:
        x = self._check_x(x)
        # the raw (log-odds) score of the probability objectives; the same values for the others
        if self.compiled is not None:
            return np.asarray(self.compiled.predict_raw(x), dtype=np.float32)
        threads = int(self.options["jobs"]) or self.threads
        return np.asarray(self.booster.predict(x, num_threads=threads, raw_score=True), dtype=np.float32)

    def predict_and_rank(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.options["objective"] in ("regression", "lambdarank"):  # no output transform: raw == predict
            raw = self.rank_scores(x)
            return raw, raw
        return super().predict_and_rank(x)

    @property
    def compiled(self) -> Any:
        """The trees compiled to C (``fit.compiled_trees``: the same raw scores, faster), built on first
        use and cached on disk; None where LightGBM's own predictor serves."""
        if self._compiled is None:
            from metaprune.fit.compiled_trees import compile_booster

            self._compiled = compile_booster(self.booster) or False
        return self._compiled or None

    def save(self, directory: Path) -> dict[str, Any]:
        self.booster.save_model(str(directory / self.payload_file))
        return {"objective": self.options["objective"]}

    @classmethod
    def load(cls, path, payload, options, n_features):
        import lightgbm as lgb

        model = cls(options, 0, n_features)
        try:
            model.booster = lgb.Booster(model_file=str(path))
        except Exception as exc:
            raise MetapruneError(f"cannot read LightGBM payload {path}: {exc}") from None
        if model.booster.num_feature() != n_features:
            raise MetapruneError(
                f"LightGBM payload {path} takes {model.booster.num_feature()} features, meta.json lists {n_features}"
            )
        return model


# ------------------------------------------------------------------------------------------------ MLP


def _parse_hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in str(text).split("-") if w)
    except ValueError:
        widths = ()
    if not widths or any(w <= 0 for w in widths):
        raise MetapruneError(f"bad mlp hidden widths {text!r}; accepted: e.g. 64-32")
    return widths


def build_mlp(n_features: int, hidden: tuple[int, ...], output: str):
    """The single MLP of models fitted before ensembles (their payload's keys are this Sequential's)."""
    from torch import nn

    layers: list[nn.Module] = []
    width = n_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 1))
    if output == "sigmoid":
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


@register
class MLPModel(Regressor):
    """ReLU MLPs with a sigmoid output (``metaprune.fit.mlp_net``): ``members`` of them trained together on
    the same batches from their own seeded inits, predicting their mean. ``members=1, hidden=64-32,
    max_rows=0`` is the thesis's 64-32 net (its SGD lr 0.001 is ``optimizer=sgd, lr=0.001``; Adam lr 1e-3
    by default, as the thesis's SGD barely moves in a few epochs). ``loss=bce`` is binary cross-entropy:
    0/1 targets (``--target survive``) or a graded target in [0, 1] as soft labels (``--target round``).
    ``max_rows`` > 0 trains on a seeded subsample of that many rows held in memory (0: every row, streamed
    seed by seed)."""

    weighted = True

    name = "mlp"
    summary = "PyTorch ReLU MLP F-64-32-1 (members > 1: an ensemble), sigmoid output, MSE, Adam lr 1e-3"
    payload_file = "model.safetensors"
    payload_format = "safetensors"
    libraries = ("torch", "safetensors.torch")
    defaults: ClassVar[dict[str, Any]] = {
        "hidden": "64-32",
        "members": 1,
        "output": "sigmoid",
        "loss": "mse",
        "epochs": 5,
        "batch_size": 2048,
        "max_rows": 4_000_000,
        "lr": 1e-3,
        "optimizer": "adam",
        "device": "auto",
    }

    def __init__(self, options=None, seed=0, n_features=0, threads=1) -> None:
        super().__init__(options, seed, n_features, threads)
        self.hidden = _parse_hidden(self.options["hidden"])
        if self.options["output"] not in ("sigmoid", "linear"):
            raise MetapruneError(f"bad mlp output {self.options['output']!r}; accepted: sigmoid, linear")
        if self.options["optimizer"] not in ("adam", "sgd"):
            raise MetapruneError(f"bad mlp optimizer {self.options['optimizer']!r}; accepted: adam, sgd")
        if self.options["loss"] not in ("mse", "bce"):
            raise MetapruneError(f"bad mlp loss {self.options['loss']!r}; accepted: mse, bce (binary cross-entropy)")
        if self.options["loss"] == "bce" and self.options["output"] != "sigmoid":
            raise MetapruneError("mlp loss bce needs output=sigmoid (it scores probabilities)")
        if int(self.options["members"]) < 1:
            raise MetapruneError(f"bad mlp members {self.options['members']!r}; accepted: a positive integer")
        self.net: Any = None
        self.device_used = "cpu"

    def _net(self):
        from metaprune.fit.mlp_net import MLPEnsemble

        net = MLPEnsemble(self.n_features, self.hidden, int(self.options["members"]), self.options["output"])
        return net.init_seeded(self.seed)

    def fit(self, data: TrainData) -> None:
        import torch

        from metaprune.seeds import generator
        from metaprune.training import resolve_device

        o = self.options
        device = resolve_device(o["device"])
        self.device_used = str(device)
        net = self._net().to(device)
        opt = (torch.optim.Adam if o["optimizer"] == "adam" else torch.optim.SGD)(net.parameters(), lr=o["lr"])
        g = generator(self.seed, "fit", 2)
        bs = int(o["batch_size"])
        net.train()
        last = 0.0
        x, y, w = data.weighted_sample(int(o["max_rows"]))
        xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        wt = None if w is None else torch.from_numpy(w).to(device)
        for _ in range(int(o["epochs"])):
            perm = torch.randperm(xt.shape[0], generator=g).to(device)
            for start in range(0, xt.shape[0], bs):
                idx = perm[start : start + bs]
                loss = self._loss(net.member_outputs(xt[idx]), yt[idx], None if wt is None else wt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                last = float(loss.detach())
            self.rows_seen += x.shape[0]
        if not math.isfinite(last):
            raise MetapruneError("mlp diverged (non-finite loss); accepted: a smaller --lr")
        self.rows_used = x.shape[0]
        self.net = net.to("cpu").eval()

    def _loss(self, pred, y, w):
        """Every member's mean loss, summed: each member's gradient is that of its own loss."""
        import torch.nn.functional as F

        loss_fn = F.binary_cross_entropy if self.options["loss"] == "bce" else F.mse_loss
        rows = loss_fn(pred, y.expand_as(pred), reduction="none")  # [members, batch]
        if w is None:
            return rows.mean(1).sum()
        return ((rows * w).sum(1) / w.sum()).sum()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x, self.net)

    def rank_scores(self, x: np.ndarray) -> np.ndarray:
        if not hasattr(self.net, "rank"):  # a single MLP of an older fit: the network without its sigmoid
            return self._forward(x, self.net[:-1] if self.options["output"] == "sigmoid" else self.net)
        return self._forward(x, self.net.rank)

    def predict_and_rank(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.predict(x), self.rank_scores(x)

    def _forward(self, x: np.ndarray, fn) -> np.ndarray:
        import torch

        x = self._check_x(x)
        out = np.empty(x.shape[0], dtype=np.float32)
        with torch.no_grad():
            for start in range(0, x.shape[0], 65536):
                out[start : start + 65536] = fn(torch.from_numpy(x[start : start + 65536])).reshape(-1).numpy()
        return out

    def architecture(self) -> dict[str, Any]:
        return {
            "inputs": self.n_features,
            "hidden": list(self.hidden),
            "members": int(self.options["members"]),
            "activation": "relu",
            "output": self.options["output"],
        }

    def save(self, directory: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(directory / self.payload_file))
        return {"architecture": self.architecture(), "trained_on": self.device_used}

    @classmethod
    def load(cls, path, payload, options, n_features):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        arch = payload.get("architecture") or {}
        opts = dict(options)
        opts["hidden"] = "-".join(str(h) for h in arch.get("hidden", []))
        opts["output"] = arch.get("output", "sigmoid")
        opts["members"] = int(arch.get("members", 1))
        model = cls(opts, 0, n_features)
        if int(arch.get("inputs", -1)) != n_features:
            raise MetapruneError(f"mlp architecture in meta.json takes {arch.get('inputs')} inputs, not {n_features}")
        if "members" in arch:
            model.net = model._net()
        else:  # fitted before ensembles: one nn.Sequential
            model.net = build_mlp(n_features, model.hidden, model.options["output"])
        try:
            model.net.load_state_dict(load_file(str(path)), strict=True)
        except (SafetensorError, RuntimeError, OSError) as exc:
            raise MetapruneError(f"cannot load mlp payload {path}: {exc}") from None
        model.net.eval()
        return model

"""The config layer: one small base for the frozen config dataclasses, and the configs several pipelines share.

Every config is a frozen dataclass deriving from :class:`Config`, which gives it ``from_dict`` (unknown keys
are one error naming them and the accepted ones; nested configs and tuples rebuilt), ``to_dict`` (JSON-able)
and the ``validate`` hook each class overrides with its own checks. A field's help text lives next to its
default (``setting(default, "help")``); the CLI reads both from here (``default_of``, ``help_of``) instead of
restating them.

Torch-free on purpose: the CLI registers its commands from these classes before any command runs, and
``cli.common.passive_openmp`` only works before torch is imported. ``TrainConfig`` (re-exported by
``metaprune.training``) and ``ScheduleConfig`` (re-exported by ``metaprune.pruning.schedules``) live here
for that reason.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass, replace
from typing import Any, ClassVar, Self

from metaprune.errors import MetapruneError


def setting(default: Any = MISSING, help: str = "", *, factory: Any = MISSING, recorded_when_set: bool = False) -> Any:
    """A dataclass field with its help text (``metadata["help"]``), read by the CLI's options.

    ``recorded_when_set``: the field is left out of ``to_dict`` (and so of config hashes) while it holds
    its default (``provenance.to_jsonable``), for a field added after configs were recorded whose default
    does not change what they mean.
    """
    metadata = {"help": help, "recorded_when_set": True} if recorded_when_set else {"help": help}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


class Config:
    """Base of the config dataclasses: ``from_dict``, ``to_dict`` and a ``validate`` hook.

    ``kind`` names the config in ``from_dict``'s error (``unknown harvest config fields [...]``).
    """

    kind: ClassVar[str] = "config"

    def validate(self) -> Self:
        """The checked config (canonical names, values in range); a one-line ``MetapruneError`` otherwise."""
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields: nested configs as dicts, tuples as lists, parsed values spelled as text."""
        from metaprune.provenance import to_jsonable

        return to_jsonable(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The config from a dict (e.g. ``to_dict``'s); nested configs may be dicts, tuples may be lists."""
        known = [f.name for f in fields(cls)]
        unknown = set(data) - set(known)
        if unknown:
            raise MetapruneError(f"unknown {cls.kind} config fields {sorted(unknown)}; accepted: {sorted(known)}")
        values = dict(data)
        for f in fields(cls):
            if f.name not in values:
                continue
            default = default_of(cls, f.name)
            value = values[f.name]
            if isinstance(default, Config) and isinstance(value, dict):
                values[f.name] = type(default).from_dict(value)
            elif isinstance(default, tuple) and isinstance(value, list):
                values[f.name] = tuple(value)
        return cls(**values)


def _field(cls: type, name: str) -> Field:
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    for f in fields(cls):
        if f.name == name:
            return f
    raise AttributeError(f"{cls.__name__} has no field {name!r}")


def default_of(cls: type, name: str) -> Any:
    """The default of field ``name`` (a default factory is called); ``"train.epochs"`` reads a nested config's."""
    head, _, rest = name.partition(".")
    f = _field(cls, head)
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        raise AttributeError(f"{cls.__name__}.{head} has no default")
    return getattr(value, rest) if rest else value


def help_of(cls: type, name: str) -> str:
    """The help text of field ``name`` (``setting(..., help)``); ``"train.epochs"``: the nested config's."""
    head, _, rest = name.partition(".")
    if rest:
        return help_of(type(default_of(cls, head)), rest)
    return _field(cls, head).metadata.get("help", "")


def require_positive(**values: object) -> None:
    """Each value a positive integer, else ``--name must be a positive integer, got V`` (benchmark sizes)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise MetapruneError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


# ------------------------------------------------------------------------------------------- pruning

PER_CLASS = 10  # the pruning batch: examples of every class (the thesis: 10 x classes)


# ------------------------------------------------------------------------------------------- training


OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class TrainConfig(Config):
    """Training hyper-parameters; the default is the thesis's (appendix C, early stopping from OpenLTH)."""

    kind: ClassVar[str] = "train"

    optimizer: str = setting("sgd", "optimizer: sgd or adam")
    lr: float = setting(0.1, "learning rate")
    momentum: float = setting(0.0, "SGD momentum")
    weight_decay: float = setting(0.0, "weight decay")
    batch_size: int = setting(64, "batch size")
    epochs: int = setting(100, "maximum training epochs")
    early_stopping: bool = setting(True, "stop a member after --patience epochs without validation improvement")
    patience: int = setting(10, "early-stopping patience in epochs")
    eval_batch_size: int = setting(2048, "batch size of validation and test passes")
    mask_mode: str = setting("grad", "how pruned weights stay zero: grad (mask the gradients) or forward")
    # True: MLPs also use autograd instead of the hand-written backward
    autograd: bool = setting(False, "MLPs use autograd instead of the hand-written backward")
    # Recorded (and hashed) only when set: the default path changes the last bits only, like a thread count,
    # so results and stores made before the compacted path existed stay the same config (README "Training").
    dense_training: bool = setting(
        False,
        "train masked MLPs on the dense path instead of the compacted/sparse one (for comparison)",
        recorded_when_set=True,
    )

    def validate(self) -> TrainConfig:
        if self.optimizer not in OPTIMIZERS:
            raise MetapruneError(f"unknown optimizer {self.optimizer!r}; accepted: {', '.join(OPTIMIZERS)}")
        for name in ("batch_size", "epochs", "patience", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise MetapruneError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise MetapruneError(f"lr must be positive, got {self.lr!r}")
        if self.mask_mode not in ("grad", "forward"):
            raise MetapruneError(f"unknown mask mode {self.mask_mode!r}; accepted: grad, forward")
        if not isinstance(self.dense_training, bool):
            raise MetapruneError(f"dense-training must be true or false, got {self.dense_training!r}")
        return self


TRAIN_PRESETS: dict[str, TrainConfig] = {
    "thesis": TrainConfig(),
    "openlth": TrainConfig(batch_size=128, epochs=40, early_stopping=False),
}


def train_preset(name: str, **overrides: object) -> TrainConfig:
    if name not in TRAIN_PRESETS:
        raise MetapruneError(f"unknown training preset {name!r}; accepted: {', '.join(TRAIN_PRESETS)}")
    cfg = TRAIN_PRESETS[name]
    clean = {k: v for k, v in overrides.items() if v is not None}
    return replace(cfg, **clean).validate()


# ------------------------------------------------------------------------------------------- schedules


@dataclass(frozen=True)
class ScheduleConfig(Config):
    """How a schedule runs: rounds of multi-shot pruning, training levels of iterative schedules."""

    kind: ClassVar[str] = "schedule"

    rounds: int = setting(100, "score/prune rounds of multi-shot schedules")
    levels: int = setting(10, "train/prune/rewind levels of iterative schedules (the harvest target's 10)")
    scope: str = setting("global", "global: rank all weights together; layer: keep the density per layer")

    def validate(self) -> ScheduleConfig:
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise MetapruneError(f"rounds must be a positive integer, got {self.rounds!r}")
        if not isinstance(self.levels, int) or self.levels < 1:
            raise MetapruneError(f"levels must be a positive integer, got {self.levels!r}")
        if self.scope not in ("global", "layer"):
            raise MetapruneError(f"unknown mask scope {self.scope!r}; accepted: global, layer")
        return self

"""What ``metaprune fit`` fits (``FitConfig``), the intended use of the model included.

Importable without torch: the CLI takes its options' defaults and help from these fields while it
registers commands, before the OpenMP settings that must precede torch's import. Checks that need the
regressor registry or the preprocessing import them when a config is validated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from metaprune.config import Config, setting
from metaprune.errors import MetapruneError

if TYPE_CHECKING:
    from metaprune.pruning.method import IntendedUse

STATE_CHOICES = ("dense", "trajectory")


@dataclass(frozen=True)
class FitConfig(Config):
    """What to fit. ``options`` are model options (see ``REGRESSORS``; e.g. ``{"max_rows": 500000}``)."""

    kind: ClassVar[str] = "fit"

    model: str = setting("mlp", "model: linear, sgd, tree, forest, mlp, lightgbm (see `metaprune list`)")
    target: str = setting(
        "round",
        "round (removal level / (levels+1), sparsity-aware; per state: counted from the state), survive "
        "(outlives the next level, 0/1), mask (in the ticket, 0/1), soft_mask (the mask averaged with the target's "
        "sibling's, 0/0.5/1: a store harvested with --siblings, dense state) or score (target score min-max per seed)",
    )
    features: str | Sequence[str] = setting(
        "static",
        "feature names or groups joined by + or , : static (every θ0 feature a multi-shot model may read: scores, "
        "structure and activations without synflow_ums), scores, structure, activations, dynamics, paths (a store "
        "harvested with --paths), portable, all, or names",
    )
    preprocess: str = setting("minmax", "minmax (per-network min-max, thesis), rank (per-layer rank), none")
    train_seeds: str | Sequence[int] | None = setting(None, "training seeds, e.g. 0-23 (default: the rest)")
    test_seeds: str | Sequence[int] | None = setting(
        None, "held-out seeds (default: the last quarter of the complete seeds)"
    )
    cv: int = setting(0, "K-fold cross-validation by seed on the training seeds (0: none)")
    options: Mapping[str, Any] = setting(factory=dict, help="model options KEY=VALUE")
    seed: int = setting(0, "seed of the fit's own randomness (shuffling, init, subsample)")
    # BLAS/OpenMP/PyTorch threads (and forest/LightGBM jobs unless their option says)
    threads: int = setting(1, "BLAS/PyTorch/LightGBM/forest threads; 1 is fastest on a shared machine, where more spin")
    states: str = setting(
        "trajectory",
        "dense (θ0 only) or trajectory (every state of the target's way down: alive weights under its mask after "
        "s levels, the target counted from there; for multi-shot use, e.g. --use @ums10)",
    )
    sample_weight: str = setting(
        "none",
        "none, or balanced (every removal level weighs the same in each network: emphasises the late-removed "
        "weights); tree, forest, lightgbm and mlp",
    )
    # candidate model options {key: (values...)}: with cv, the combination of best mean top-k Jaccard wins
    grid: Mapping[str, Sequence[Any]] = setting(
        factory=dict,
        help="candidate model options KEY=V1,V2,... (repeat); with --cv K the combination of best mean "
        "cross-validated top-k Jaccard is fitted",
    )
    target_method: str | None = setting(
        None,
        "the harvest target to imitate, e.g. synflow@ims or imp: the store given must hold it (of several stores, "
        "those that hold it are used); default: the stores' one target",
    )
    use: str | None = setting(
        None,
        "how the model is meant to prune, a method suffix recorded in its meta and used by a bare learned:DIR, "
        "e.g. @ums10 or '#from:synflow@ums' (a model reading dynamics features always warms up); '' prunes in "
        "one shot; default: @ums with one round per level of the target (@ums10 for the default harvest, "
        "@ums5 for a family's)",
    )

    def intended_use(self, warmup: float | None = None) -> IntendedUse:
        """How the model is meant to prune (``use`` parsed), with the warm-up of the dynamics features it reads."""
        from metaprune.pruning.method import parse_use

        if self.use is None:
            raise MetapruneError("the fit's use is set from its stores' levels (FitConfig.with_rounds_of) first")
        return parse_use(self.use, warmup)

    def with_rounds_of(self, levels: Sequence[int]) -> FitConfig:
        """This config with ``use`` set: an unset one prunes in as many UMS rounds as the target had
        ``levels`` (of every store), since the scorer learns the target's way down one level a state, and a
        round then prunes what a level pruned (other round counts scored worse on tuning seeds, README)."""
        if self.use is not None:
            return self
        distinct = sorted({int(n) for n in levels})
        if len(distinct) != 1:
            raise MetapruneError(
                f"the stores' targets have different levels ({', '.join(map(str, distinct))}), so the rounds to prune "
                "in are not one; accepted: --use @umsN naming them"
            )
        return replace(self, use=f"@ums{distinct[0]}")

    @classmethod
    def for_recipe(cls, recipe: str = "multishot", **given: Any) -> FitConfig:
        """The config of a named recipe (``RECIPES``), with the fields ``given`` explicitly on top."""
        if recipe not in RECIPES:
            raise MetapruneError(f"unknown recipe {recipe!r}; accepted: {', '.join(RECIPES)}")
        return cls(**{**RECIPES[recipe], **given})

    def validate(self) -> FitConfig:
        import numpy as np

        from metaprune.fit import preprocess as pp
        from metaprune.fit.models import REGRESSORS

        REGRESSORS.canonical(self.model)
        pp.check_target(self.target)
        pp.check_preprocess(self.preprocess)
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise MetapruneError(
                f"bad threads {self.threads!r}; accepted: a positive integer (1 is fastest on a busy machine)"
            )
        if int(self.cv) < 0 or int(self.cv) == 1:
            raise MetapruneError(f"bad --cv {self.cv!r}; accepted: 0 (none) or K >= 2 folds")
        if self.states not in STATE_CHOICES:
            raise MetapruneError(f"bad states {self.states!r}; accepted: {', '.join(STATE_CHOICES)}")
        if self.target in pp.DENSE_ONLY_TARGETS and self.states != "dense":
            raise MetapruneError(
                f"target {self.target!r} exists only for the dense state; accepted: --states dense, or the targets "
                "round, survive, mask"
            )
        pp.sample_weights(np.zeros(0), self.sample_weight)
        if self.grid and int(self.cv) < 2:
            raise MetapruneError("a --grid of options is chosen by cross-validation; accepted: --cv K (K >= 2) with it")
        for key, values in self.grid.items():
            if not values:
                raise MetapruneError(f"--grid {key}= names no value; accepted: KEY=V1,V2,...")
        if self.use is not None:
            self.intended_use()
        return self


# Named starting points of ``fit``. ``multishot`` (the defaults): every state of the target's way down,
# the level of removal counted from each state, the static features, pruning in one round per level of
# the target -- the recipe that beats SynFlow. ``thesis``: the thesis's single-shot model (chapter 4.3,
# figure 5.9) on the dense θ0 features of the base scores, pruning in one shot.
RECIPES: dict[str, dict[str, Any]] = {
    "multishot": {},
    "thesis": {"states": "dense", "features": "scores", "use": ""},
    "family": {"features": "portable", "preprocess": "none"},
}
RECIPE_HELP = {
    "multishot": "the defaults: every state of the target's way down, the level of removal counted from each "
    "state, the static features, pruning in one round per level of the target (@ums10 for the default harvest)",
    "thesis": "the thesis's single-shot model (4.3, 5.9): dense θ0, the six base scores, pruning in one shot",
    "family": "one model across the stores of several networks (fit --family NAME): the multishot recipe on the "
    "portable features (per-layer ranks, network quantiles, layer descriptors), unscaled",
}

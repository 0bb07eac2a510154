"""Feature names, groups and named selections: what ``metaprune.features`` computes, without torch.

The fit side (importable without torch) and the harvest's config read these; the computation lives in
``metaprune.features``.
"""

from __future__ import annotations

from collections.abc import Iterable

from metaprune.errors import MetapruneError

SCORE_FEATURES: tuple[str, ...] = ("magnitude", "snip", "grasp", "grasp_abs", "synflow", "synflow_ums")
DYNAMICS_FEATURES: tuple[str, ...] = ("delta", "movement", "abs_grad", "sign_flips", "magnitude_e")
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "scores": SCORE_FEATURES,
    "structure": ("depth", "fan_in", "fan_out", "layer_size", *(f"rank_{s}" for s in SCORE_FEATURES)),
    "activations": ("weight", "layer_frobenius", "in_act_max", "in_act_mean", "out_act_max", "out_act_mean"),
    "dynamics": (*DYNAMICS_FEATURES, *(f"rank_{s}" for s in DYNAMICS_FEATURES)),
}
FEATURE_NAMES: tuple[str, ...] = tuple(name for group in FEATURE_GROUPS.values() for name in group)
# Features whose cost grows with the rounds of a multi-shot schedule that reads them every round: the
# 100-round SynFlow UMS behind ``synflow_ums`` would make a 10-round learned UMS quadratic in rounds.
MULTI_SHOT_EXCLUDED: tuple[str, ...] = ("synflow_ums", "rank_synflow_ums")
# Named selections across the groups (``fit --features static``): ``static`` is every feature of θ0 a
# multi-shot learned scorer may read each round -- no warm-up, nothing quadratic in rounds.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "static": tuple(
        n
        for g in ("scores", "structure", "activations")
        for n in FEATURE_GROUPS[g]
        if n not in MULTI_SHOT_EXCLUDED
    ),
}
FEATURE_VERSION = 2  # bump when a feature's definition changes (part of the harvest config)
RANKED = (*SCORE_FEATURES, *DYNAMICS_FEATURES)


def feature_spec() -> dict:
    """A JSON-able description of the features (stored with every harvest)."""
    return {
        "version": FEATURE_VERSION,
        "names": list(FEATURE_NAMES),
        "groups": {k: list(v) for k, v in FEATURE_GROUPS.items()},
        "dtype": "float32",
        "synflow": "single-shot SynFlow divided by its sum",
        "synflow_ums": "round of removal by upfront multi-shot SynFlow to the density / (rounds + 1); survivors 1",
        "rank": "rank of the score within its layer, ties averaged, scaled to [0, 1]",
        "activations": "max/mean over the pruning batch (eval mode); hidden outputs post-ReLU, last layer logits",
        "dynamics": "from a dense warm-up of warmup_epochs from θ0 on the warmup_order stream; g_t = update / lr",
    }


def select_features(selection: str | Iterable[str] | None = None) -> tuple[str, ...]:
    """Expand feature names and group names (``scores``, ``structure``, ``activations``, ``all``).

    ``None`` or ``"all"`` gives :data:`FEATURE_NAMES`. A comma-separated string is accepted. The result
    keeps the given order, without duplicates; an unknown name is a one-line error listing the choices.
    """
    if selection is None:
        return FEATURE_NAMES
    items = [s.strip() for s in selection.split(",")] if isinstance(selection, str) else [str(s) for s in selection]
    out: list[str] = []
    for item in items:
        if not item:
            continue
        if item == "all":
            names: tuple[str, ...] = FEATURE_NAMES
        elif item in FEATURE_GROUPS:
            names = FEATURE_GROUPS[item]
        elif item in FEATURE_SETS:
            names = FEATURE_SETS[item]
        elif item in FEATURE_NAMES:
            names = (item,)
        else:
            raise MetapruneError(
                f"unknown feature {item!r}; accepted: all, {', '.join([*FEATURE_GROUPS, *FEATURE_SETS])}, or one of "
                f"{', '.join(FEATURE_NAMES)}"
            )
        out.extend(n for n in names if n not in out)
    if not out:
        raise MetapruneError("empty feature selection; accepted: all, a group name or feature names")
    return tuple(out)


# ------------------------------------------------------------------------------------------- helpers

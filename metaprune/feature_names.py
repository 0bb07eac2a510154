"""Feature names, groups and named selections: what ``metaprune.features`` computes, without torch.

The fit side (importable without torch) and the harvest's config read these; the computation lives in
``metaprune.features``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

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
# Portable features (``fit --features portable``): values that mean the same on any network, so that one
# model may be fitted across a family of networks and score a network it never saw. The per-layer ranks of
# the static scores are stored; the others are derived when a store is read and when a network is scored
# (``metaprune.fit.portable``), so stores need no re-harvest. Definitions: ``metaprune.fit.portable``.
PORTABLE_SCORES: tuple[str, ...] = ("magnitude", "snip", "grasp", "grasp_abs", "synflow")
PORTABLE_DESCRIPTORS: tuple[str, ...] = (
    "rel_depth", "is_last", "log_fan_in", "log_fan_out", "log_share", "log_density",
)  # fmt: skip
PORTABLE_UNITS: tuple[str, ...] = ("in_act_max", "in_act_mean", "out_act_max", "out_act_mean")
DERIVED_FEATURES: tuple[str, ...] = (
    *PORTABLE_DESCRIPTORS,
    *(f"net_q_{s}" for s in PORTABLE_SCORES),
    *(f"layer_q_{u}" for u in PORTABLE_UNITS),
)
FEATURE_SETS["portable"] = (*(f"rank_{s}" for s in PORTABLE_SCORES), *DERIVED_FEATURES)
# Path and unit features (``harvest --paths``; ``metaprune.features`` defines them): optional, so that the
# stores of the default harvest keep their feature set and hash. A harvest with them stores
# FEATURE_NAMES + PATH_FEATURES; a learned scorer computes them like any other feature.
PATH_FEATURES: tuple[str, ...] = (
    "path_in", "path_out", "rank_path_in", "rank_path_out",
    "unit_in_alive", "unit_out_alive", "layer_live_in", "layer_live_out",
)  # fmt: skip
FEATURE_SETS["paths"] = PATH_FEATURES
COMPUTABLE_FEATURES: tuple[str, ...] = (*FEATURE_NAMES, *PATH_FEATURES)
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


PATH_SPEC = (
    "SynFlow's linearised network (|θ| under the mask, all-ones input, float64): path_in / path_out = the flow "
    "into the weight's input unit / from its output unit to the output (Conv: summed over positions), divided "
    "by the layer's largest; rank_path_* their per-layer ranks with pruned weights at 0; unit_in_alive / "
    "unit_out_alive = alive share of the output unit's incoming / input unit's outgoing weights; layer_live_in "
    "/ layer_live_out = share of the layer's input / output units on a live path (some weight through them "
    "with SynFlow score > 0)"
)


def select_features(
    selection: str | Iterable[str] | None = None,
    available: Sequence[str] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    *,
    owner: str | None = None,
    derived: Sequence[str] = (),
) -> tuple[str, ...]:
    """Feature names from a selection of feature names, group names and ``all``: the one feature selector
    (``compute_features``' columns, a store's ``select``, ``fit --features``).

    ``available`` are the names that can be chosen (default :data:`FEATURE_NAMES`; a store passes its
    columns), ``groups`` the group names (default :data:`FEATURE_GROUPS` and the named selections
    :data:`FEATURE_SETS`); a group takes
    its available members, and is refused when it has none. A string joins its items with ``+`` or ``,``;
    an empty item is refused. ``None`` or ``all`` gives every available name. The result keeps the given
    order, without duplicates; an error names ``owner`` (what holds ``available``, e.g. "the store").
    ``derived`` names may be chosen by name or group too, but are not part of ``all`` (``fit.portable``).
    """
    available = FEATURE_NAMES if available is None else tuple(available)
    groups = {**FEATURE_GROUPS, **FEATURE_SETS} if groups is None else groups
    if selection is None:
        return available
    items = [s.strip() for s in re.split(r"[+,]", selection)] if isinstance(selection, str) else list(selection)
    choices = f"groups: all, {', '.join(groups)}"
    if not items or any(not str(item) for item in items):
        raise MetapruneError(
            f"bad feature list {selection!r}: empty item; accepted: names or groups joined by '+' or ',', "
            f"e.g. scores+structure; {choices}"
        )
    out: list[str] = []
    for item in map(str, items):
        if item == "all":
            names: Sequence[str] = available
        elif item in groups:
            names = [n for n in groups[item] if n in available or n in derived]  # a harvest may lack some
            if not names:
                raise MetapruneError(
                    f"{owner or 'this metaprune'} has no feature of group {item!r} ({', '.join(groups[item])}); "
                    f"available: {', '.join(available)}"
                )
        elif item in available or item in derived:
            names = (item,)
        else:
            raise MetapruneError(
                f"unknown feature {item!r}; {owner or 'this metaprune'} has: {', '.join(available)}; {choices}"
            )
        out.extend(n for n in names if n not in out)
    return tuple(out)

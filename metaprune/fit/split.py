"""Honest seed splits: a seed (one network initialisation, all its weights) is on one side only.

A seed number means the same initialisation in every store of the same network, so when several stores
are combined the split is by seed number across all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from metaprune.errors import MetapruneError
from metaprune.seeds import format_seeds, parse_seeds


def _as_seeds(value: str | Sequence[int] | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_seeds(value)
    return tuple(sorted({int(s) for s in value}))


def split_seeds(
    complete: Sequence[int], train: str | Sequence[int] | None, test: str | Sequence[int] | None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Train and test seeds. Default test: the last quarter of the complete seeds (at least one)."""
    complete = tuple(sorted(set(complete)))
    tr, te = _as_seeds(train), _as_seeds(test)
    for label, seeds in (("train", tr), ("test", te)):
        if seeds is not None:
            missing = [s for s in seeds if s not in complete]
            if missing:
                raise MetapruneError(
                    f"--{label}-seeds {format_seeds(missing)} are not complete in the store(s); "
                    f"complete seeds: {format_seeds(complete) or 'none'}"
                )
    if tr is not None and te is not None:
        both = sorted(set(tr) & set(te))
        if both:
            raise MetapruneError(
                f"seeds {format_seeds(both)} are in both --train-seeds and --test-seeds; a held-out seed must "
                "never be trained on"
            )
    if te is None:
        rest = [s for s in complete if tr is None or s not in tr]
        if tr is None:
            if len(complete) < 2:
                raise MetapruneError(
                    f"too few complete seeds to hold any out ({len(complete)}: {format_seeds(complete) or 'none'}); "
                    "accepted: a store with at least 2 complete seeds"
                )
            n_test = max(1, len(complete) // 4)
            te = complete[-n_test:]
        else:
            te = tuple(rest)
    if tr is None:
        tr = tuple(s for s in complete if s not in te)
    if not te:
        raise MetapruneError("no seed left to test on; accepted: fewer --train-seeds or explicit --test-seeds")
    if not tr:
        raise MetapruneError("no seed left to train on; accepted: fewer --test-seeds or explicit --train-seeds")
    return tuple(tr), tuple(te)

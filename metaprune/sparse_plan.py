"""Which members of a masked MLP population train how: the dense path, or compacted groups and their kernels.

Decided from the masks alone (live widths and kept counts of each member's compact form, ``compaction``),
never from a timing, so a population's numbers do not depend on the machine's load.

Each member's layers are first judged alone: a layer goes to a CSR kernel when its kept weights cost less
there than the dense block of its live units does (the per-weight costs below). Members with the same
verdicts form a group (a CSR layer does not care how wide the members are; a dense one pads them to the
widest). A group then fixes its layers' kernels on the group's own sizes, per-call overheads included, and
a group whose kernels are all dense and whose padded widths are the full network's trains on the dense
path (``mlp_step``): compaction would save nothing there. Members without masks (or fully dense ones)
therefore train exactly as before.

The costs are microseconds per step at batch 64, float32, one thread, measured on the project's CPU
(Xeon, AVX-512; README "Training"): a dense layer costs ``c + e·entries`` (its padded block: ``K·out·in``,
the first layer over the group's input pixels), a CSR layer ``c + e·kept``. The first layer has no input
gradient, so its per-entry costs are lower. Only CPUs use CSR kernels; elsewhere groups are compacted
and dense (the constants were not measured on a GPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from metaprune.compaction import CompactMember
from metaprune.config import TrainConfig

# (fixed µs, µs per entry or kept weight) per kernel and layer position, from the calibration in README
COSTS = {
    ("dense", True): (10.0, 0.0020),
    ("dense", False): (10.0, 0.0033),
    ("csr", True): (20.0, 0.0090),
    ("csr", False): (25.0, 0.0140),
}


@dataclass(frozen=True)
class Group:
    """Members (indices into the population) trained together; ``kinds`` None: the dense path."""

    members: tuple[int, ...]
    kinds: tuple[str, ...] | None

    def describe(self, compact: Sequence[CompactMember]) -> dict:
        widths = padded_widths([compact[i] for i in self.members])
        kept = [sum(compact[i].kept[j] for i in self.members) for j in range(len(compact[0].kept))]
        return {
            "members": list(self.members),
            "path": "dense" if self.kinds is None else "compact",
            "kernels": "dense" if self.kinds is None else "/".join(self.kinds),
            "live_widths": widths,
            "kept": kept,
        }


def unsupported(config: TrainConfig) -> str | None:
    """Why the compacted path cannot train ``config`` exactly (None: it can)."""
    if config.optimizer != "sgd":
        return f"optimizer {config.optimizer}"
    if config.momentum != 0:
        return f"SGD momentum {config.momentum:g}"
    if config.weight_decay != 0:
        return f"weight decay {config.weight_decay:g}"
    return None


def layer_cost(kind: str, first: bool, entries: int, kept: int) -> float:
    fixed, per = COSTS[(kind, first)]
    return fixed + per * (kept if kind == "csr" else entries)


def member_kinds(member: CompactMember) -> tuple[str, ...]:
    """Per layer, the kernel that costs less for this member's own live block (fixed costs left out:
    in a group they are shared)."""
    widths = member.widths
    kinds = []
    for layer, kept in enumerate(member.kept):
        entries = widths[layer] * widths[layer + 1]
        first = layer == 0
        csr = COSTS[("csr", first)][1] * kept < COSTS[("dense", first)][1] * entries
        kinds.append("csr" if csr else "dense")
    return tuple(kinds)


def padded_widths(members: Sequence[CompactMember]) -> list[int]:
    """The group's widths: the union of the members' input pixels, then the widest member per boundary."""
    pixels = int(torch.unique(torch.cat([m.units[0] for m in members])).numel())
    return [pixels] + [max(m.widths[j] for m in members) for j in range(1, len(members[0].widths))]


def group_kinds(members: Sequence[CompactMember]) -> tuple[str, ...]:
    """The group's kernels: per layer the cheaper one on the group's sizes (a dense block is padded)."""
    widths = padded_widths(members)
    kinds = []
    for layer in range(len(widths) - 1):
        entries = len(members) * widths[layer + 1] * widths[layer]
        kept = sum(m.kept[layer] for m in members)
        dense = layer_cost("dense", layer == 0, entries, kept)
        csr = layer_cost("csr", layer == 0, entries, kept)
        kinds.append("csr" if csr < dense else "dense")
    return tuple(kinds)


def plan(members: Sequence[CompactMember], full_widths: Sequence[int], sparse_kernels: bool = True) -> list[Group]:
    """Groups of the population (in order of their first member); ``full_widths``: the network's sizes."""
    if not sparse_kernels:
        return [_group(range(len(members)), ("dense",) * len(members[0].kept), members, full_widths)]
    by_verdict: dict[tuple[str, ...], list[int]] = {}
    for i, m in enumerate(members):
        by_verdict.setdefault(member_kinds(m), []).append(i)
    # Members whose groups chose the same kernels train together: fewer groups, fewer kernel calls.
    by_kinds: dict[tuple[str, ...], list[int]] = {}
    for rows in by_verdict.values():
        by_kinds.setdefault(group_kinds([members[i] for i in rows]), []).extend(rows)
    merged = [sorted(rows) for rows in by_kinds.values()]
    merged.sort(key=lambda rows: rows[0])
    return [_group(rows, group_kinds([members[i] for i in rows]), members, full_widths) for rows in merged]


def _group(rows, kinds: tuple[str, ...], members: Sequence[CompactMember], full_widths: Sequence[int]) -> Group:
    """A group with its kernels; all dense at the network's full widths: the dense path."""
    rows = tuple(rows)
    if all(k == "dense" for k in kinds) and padded_widths([members[i] for i in rows]) == list(full_widths):
        return Group(rows, None)
    return Group(rows, kinds)

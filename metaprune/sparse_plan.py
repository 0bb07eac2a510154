"""Which members of a masked MLP population train how: the dense path, or compacted groups and their kernels.

Decided from the masks alone (live widths and kept counts of each member's compact form, ``compaction``),
never from a timing, so a population's numbers do not depend on the machine's load.

Each member's layers are first judged alone: a layer goes to a CSR kernel when its kept weights cost less
there than the dense block of its live units does. Members with the same verdicts start as one group (a
CSR layer does not care how wide its members are; a dense one pads them to the widest). Groups are then
merged while a merge costs less than the two groups apart — every group pays fixed costs per step, a
merge may pad dense layers — and each group takes, per layer, the kernel that costs less on its own
sizes. A group whose kernels are all dense and whose padded widths are the full network's trains on the
dense path (``mlp_step``): compaction would save nothing there, so members without masks (or fully dense
ones) train exactly as before.

The costs (``COSTS``) were fitted to the CPU time of each layer's kernels (forward, input gradient, update)
at batch 64, float32, one thread, on the project's 2-core Xeon (AVX-512, MKL): README "Training". The first
layer has no input gradient, so it costs less per entry. Only CPUs use CSR kernels; elsewhere groups are
compacted and dense (the constants were not measured on a GPU).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from metaprune.compaction import CompactMember
from metaprune.config import TrainConfig

# Microseconds per step (batch 64, float32, one thread; README "Training"): a dense layer costs
# ``fixed + per · entries`` of its padded block, a CSR layer ``fixed + per · kept + ROW · rows`` (rows of W,
# and of Wᵀ after the first layer: every output row is written, whatever it keeps).
COSTS = {
    ("dense", True): (3.0, 0.0015),
    ("dense", False): (9.0, 0.0023),
    ("csr", True): (18.0, 0.0075),
    ("csr", False): (20.0, 0.0105),
}
CSR_ROW = 0.012
GROUP_FIXED = 55.0  # the rest of a group's step: batch gather, softmax, activations' element-wise passes
# A CPU population of compacted groups whose modelled step costs less than this trains on one thread: its
# kernels are too small for a second thread to pay its wake-ups. Measured on LeNet-300-100 tickets (README
# "Benchmarks"): with OMP_WAIT_POLICY=PASSIVE, as harvest and bench set it, one thread ran them 2.1x
# faster than two at density 0.005 (312 µs modelled), 2.3x at 0.01, 1.6x at 0.02 (790 µs), equal at 0.05.
ONE_THREAD_BELOW_US = 1000.0


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


def layer_cost(kind: str, first: bool, entries: int, kept: int, rows: int) -> float:
    """Modelled µs per step of one layer: ``entries`` in its dense block, ``kept`` weights, ``rows`` to write."""
    fixed, per = COSTS[(kind, first)]
    if kind == "csr":
        return fixed + per * kept + CSR_ROW * rows
    return fixed + per * entries


def _rows(first: bool, n_out: int, n_in: int) -> int:
    return n_out if first else n_out + n_in


def member_kinds(member: CompactMember) -> tuple[str, ...]:
    """Per layer, the kernel that costs less for this member's own live block (fixed costs left out:
    in a group they are shared)."""
    widths = member.widths
    kinds = []
    for layer, kept in enumerate(member.kept):
        n_out, n_in, first = widths[layer + 1], widths[layer], layer == 0
        dense = layer_cost("dense", first, n_out * n_in, kept, 0) - COSTS[("dense", first)][0]
        csr = layer_cost("csr", first, n_out * n_in, kept, _rows(first, n_out, n_in)) - COSTS[("csr", first)][0]
        kinds.append("csr" if csr < dense else "dense")
    return tuple(kinds)


def padded_widths(members: Sequence[CompactMember]) -> list[int]:
    """The group's widths: the union of the members' input pixels, then the widest member per boundary."""
    pixels = int(torch.unique(torch.cat([m.units[0] for m in members])).numel())
    return [pixels] + [max(m.widths[j] for m in members) for j in range(1, len(members[0].widths))]


def group_kinds(members: Sequence[CompactMember]) -> tuple[str, ...]:
    """The group's kernels: per layer the cheaper one on the group's sizes (a dense block is padded)."""
    return _choose(members)[0]


def group_cost(members: Sequence[CompactMember]) -> float:
    """Modelled µs per step of training ``members`` as one group, each layer on its cheaper kernel."""
    return _choose(members)[1]


def _choose(members: Sequence[CompactMember]) -> tuple[tuple[str, ...], float]:
    widths = padded_widths(members)
    kinds, total = [], GROUP_FIXED
    for layer in range(len(widths) - 1):
        first = layer == 0
        entries = len(members) * widths[layer + 1] * widths[layer]
        kept = sum(m.kept[layer] for m in members)
        n_out = sum(m.widths[layer + 1] for m in members)
        n_in = sum(m.widths[layer] for m in members)
        dense = layer_cost("dense", first, entries, kept, 0)
        csr = layer_cost("csr", first, entries, kept, _rows(first, n_out, n_in))
        kinds.append("csr" if csr < dense else "dense")
        total += min(csr, dense)
    return tuple(kinds), total


def single_thread(groups: Sequence[Group], members: Sequence[CompactMember]) -> bool:
    """Whether a population planned as ``groups`` trains on one thread: all its groups compacted and
    their modelled step costs together below ``ONE_THREAD_BELOW_US``."""
    if any(g.kinds is None for g in groups):
        return False
    return sum(group_cost([members[i] for i in g.members]) for g in groups) < ONE_THREAD_BELOW_US


def plan(members: Sequence[CompactMember], full_widths: Sequence[int], sparse_kernels: bool = True) -> list[Group]:
    """Groups of the population (in order of their first member); ``full_widths``: the network's sizes.

    Members start in groups of equal verdicts (``member_kinds``); then, while some merge of two groups
    costs less than the two apart (a group's fixed costs against padding), the best such merge is made.
    """
    if not sparse_kernels:
        return [_group(range(len(members)), ("dense",) * len(members[0].kept), members, full_widths)]
    by_verdict: dict[tuple[str, ...], list[int]] = {}
    for i, m in enumerate(members):
        by_verdict.setdefault(member_kinds(m), []).append(i)
    groups = [sorted(rows) for rows in by_verdict.values()]
    costs = [group_cost([members[i] for i in rows]) for rows in groups]
    while len(groups) > 1:
        best = None
        for a, b in itertools.combinations(range(len(groups)), 2):
            merged = sorted(groups[a] + groups[b])
            cost = group_cost([members[i] for i in merged])
            saving = costs[a] + costs[b] - cost
            if saving > 0 and (best is None or saving > best[0]):
                best = (saving, a, b, merged, cost)
        if best is None:
            break
        _, a, b, merged, cost = best
        groups = [g for i, g in enumerate(groups) if i not in (a, b)] + [merged]
        costs = [c for i, c in enumerate(costs) if i not in (a, b)] + [cost]
    groups.sort(key=lambda rows: rows[0])
    return [_group(rows, group_kinds([members[i] for i in rows]), members, full_widths) for rows in groups]


def _group(rows, kinds: tuple[str, ...], members: Sequence[CompactMember], full_widths: Sequence[int]) -> Group:
    """A group with its kernels; all dense at the network's full widths: the dense path."""
    rows = tuple(rows)
    if all(k == "dense" for k in kinds) and padded_widths([members[i] for i in rows]) == list(full_widths):
        return Group(rows, None)
    return Group(rows, kinds)

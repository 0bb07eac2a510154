"""Independent random streams derived from one master seed.

Each stream (init, data order, pruning batch, random scorer, tie-breaking, NTK-SAP's random weights and
inputs ``ntksap``, PHEW's walks ``phew``, GEM-MINER's score init and data order ``gem``, RigL's drop noise
``rigl``, ...) gets its own seed from
``numpy.random.SeedSequence(master, spawn_key=stream)``; streams never share state, so adding a new
consumer of randomness never shifts the numbers another consumer sees.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def stream_seed(master: int, stream: str, *extra: int) -> int:
    """A 63-bit seed for ``stream`` (plus optional integer sub-keys) under ``master``."""
    key = (zlib.crc32(stream.encode()), *[int(e) for e in extra])
    seq = np.random.SeedSequence(int(master), spawn_key=key)
    return int(seq.generate_state(2, dtype=np.uint32).astype(np.uint64) @ np.array([1 << 31, 1], np.uint64))


def generator(master: int, stream: str, *extra: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator seeded for ``stream``; CPU unless asked (CUDA generators differ in stream)."""
    g = torch.Generator(device=device)
    g.manual_seed(stream_seed(master, stream, *extra))
    return g


SIBLING = "sibling"  # the stream a sibling run's data order and pruning batch derive from


def sibling_seed(master: int) -> int:
    """The seed a sibling run uses in place of ``master`` for its data order and its pruning batch: the
    same method from the same θ0 with an independent data order and pruning batch (``method!sibling``,
    ``harvest --siblings``)."""
    return stream_seed(master, SIBLING)


def check_seed(seed: int) -> int:
    """A master seed as a library call takes it: a non-negative integer (bools refused), or a one-line error."""
    from metaprune.errors import MetapruneError

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MetapruneError(f"bad seed {seed!r}; accepted: a non-negative integer")
    return seed


MAX_SEEDS = 100_000  # seeds one command may name: a larger set is a typo, and would be built before any check


def parse_seeds(text: str) -> tuple[int, ...]:
    """Parse ``"0-7"``, ``"3"``, ``"0,2,5-6"`` into a sorted tuple of distinct non-negative seeds.

    At most :data:`MAX_SEEDS` seeds: a range is measured before it is expanded, so ``0-999999999`` is a
    one-line error, not a set of a billion integers.
    """
    from metaprune.errors import MetapruneError

    parts = [part.strip() for part in str(text).split(",")]
    if not all(parts):
        raise MetapruneError(f"bad seed list {text!r}: empty item; accepted: e.g. 0-7 or 0,2,5-6")
    ranges = sorted(_seed_range(part, text) for part in parts)
    if ranges[0][0] < 0:
        raise MetapruneError(f"bad seed list {text!r}: seeds must be non-negative")
    count, end = 0, -1  # distinct seeds of the sorted ranges, counted without expanding them
    for lo, hi in ranges:
        count += max(0, hi - max(lo, end + 1) + 1)
        end = max(end, hi)
    if count > MAX_SEEDS:
        raise MetapruneError(
            f"bad seed list {text!r}: {count:,} seeds; accepted: at most {MAX_SEEDS:,} seeds per command"
        )
    return tuple(sorted({s for lo, hi in ranges for s in range(lo, hi + 1)}))


def _seed_range(part: str, text: str) -> tuple[int, int]:
    """(start, end) of one item of a seed list: ``N`` or ``START-END``."""
    from metaprune.errors import MetapruneError

    try:
        if "-" not in part:
            return int(part), int(part)
        lo_s, hi_s = part.split("-", 1)
        lo, hi = int(lo_s), int(hi_s)
    except ValueError:
        raise MetapruneError(
            f"bad seed list {text!r}: {part!r} is not a number or range; accepted: e.g. 0-7 or 0,2,5-6"
        ) from None
    if hi < lo:
        raise MetapruneError(
            f"bad seed range {part!r}: end {hi} is below start {lo}; accepted: START-END with START <= END"
        )
    return lo, hi


def format_seeds(seeds: tuple[int, ...] | list[int]) -> str:
    """Inverse of ``parse_seeds`` producing compact ranges."""
    out: list[str] = []
    s = sorted(seeds)
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        out.append(str(s[i]) if i == j else f"{s[i]}-{s[j]}")
        i = j + 1
    return ",".join(out)

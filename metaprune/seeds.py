"""Independent random streams derived from one master seed.

Each stream (init, data order, pruning batch, random scorer, tie-breaking, NTK-SAP's random weights and
inputs ``ntksap``, PHEW's walks ``phew``, ...) gets its own seed from
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


def parse_seeds(text: str) -> tuple[int, ...]:
    """Parse ``"0-7"``, ``"3"``, ``"0,2,5-6"`` into a sorted tuple of distinct non-negative seeds."""
    from metaprune.errors import MetapruneError

    seeds: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise MetapruneError(f"bad seed list {text!r}: empty item; accepted: e.g. 0-7 or 0,2,5-6")
        try:
            if "-" in part:
                lo_s, hi_s = part.split("-", 1)
                lo, hi = int(lo_s), int(hi_s)
                if hi < lo:
                    raise MetapruneError(
                        f"bad seed range {part!r}: end {hi} is below start {lo}; accepted: START-END with START <= END"
                    )
                seeds.update(range(lo, hi + 1))
            else:
                seeds.add(int(part))
        except ValueError as exc:
            if isinstance(exc, MetapruneError):
                raise
            raise MetapruneError(
                f"bad seed list {text!r}: {part!r} is not a number or range; accepted: e.g. 0-7 or 0,2,5-6"
            ) from None
    if any(s < 0 for s in seeds):
        raise MetapruneError(f"bad seed list {text!r}: seeds must be non-negative")
    return tuple(sorted(seeds))


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

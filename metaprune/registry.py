"""One small registry type, instantiated once per extension point."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from metaprune.errors import MetapruneError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    help: str
    aliases: tuple[str, ...] = ()


class Registry(Generic[T]):
    """Maps names (and aliases) to entries; unknown names raise a one-line error listing the choices."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, value: T, help: str = "", aliases: tuple[str, ...] = ()) -> T:
        if name in self._entries or name in self._aliases:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = Entry(name, value, help, aliases)
        for alias in aliases:
            self._aliases[alias] = name
        return value

    def decorator(self, name: str, help: str = "", aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        def wrap(value: T) -> T:
            return self.register(name, value, help, aliases)

        return wrap

    def canonical(self, name: str) -> str:
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise MetapruneError(f"unknown {self.kind} {name!r}; accepted: {', '.join(self.names())}")

    def get(self, name: str) -> T:
        return self._entries[self.canonical(name)].value

    def entry(self, name: str) -> Entry[T]:
        return self._entries[self.canonical(name)]

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

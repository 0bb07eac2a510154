"""One small registry type, instantiated once per extension point.

Besides fixed names, a registry resolves *prefixed* names (``learned:DIR``) through a resolver that the
layer owning them registers (``register_prefix``). A layer below that owner never imports it: the first
lookup of a prefixed name imports the provider named in ``metaprune.PREFIX_PROVIDERS``, whose import
registers the resolver.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import metaprune
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
        self._resolvers: dict[str, tuple[Callable[[str], T], str]] = {}

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

    def register_prefix(self, prefix: str, resolver: Callable[[str], T], help: str = "") -> None:
        """Names ``PREFIX<rest>`` resolve to ``resolver(rest)`` (called on every ``get``; it may cache)."""
        if prefix in self._resolvers:
            raise ValueError(f"{self.kind} prefix {prefix!r} registered twice")
        self._resolvers[prefix] = (resolver, help)

    def prefixes(self) -> list[str]:
        """Registered prefixes and those a provider module will register on first use."""
        declared = [p for kind, p in _providers() if kind == self.kind]
        return list(dict.fromkeys([*self._resolvers, *declared]))

    def prefix_of(self, name: str) -> str | None:
        return next((p for p in self.prefixes() if name.startswith(p)), None)

    def _resolver(self, prefix: str) -> Callable[[str], T]:
        if prefix not in self._resolvers:
            module = _providers().get((self.kind, prefix))
            if module is not None:
                importlib.import_module(module)  # its import registers the resolver
        if prefix not in self._resolvers:
            raise MetapruneError(
                f"no resolver for {self.kind} names starting {prefix!r} is registered; import the module that "
                "provides them"
            )
        return self._resolvers[prefix][0]

    def canonical(self, name: str) -> str:
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        prefix = self.prefix_of(name)
        if prefix is not None and len(name) > len(prefix):
            return name
        if prefix is not None:
            raise MetapruneError(f"{self.kind} {name!r} names nothing after {prefix!r}")
        accepted = [*self.names(), *(f"{p}NAME" for p in self.prefixes())]
        raise MetapruneError(f"unknown {self.kind} {name!r}; accepted: {', '.join(accepted)}")

    def get(self, name: str) -> T:
        canonical = self.canonical(name)
        if canonical in self._entries:
            return self._entries[canonical].value
        prefix = self.prefix_of(canonical)
        assert prefix is not None
        return self._resolver(prefix)(canonical[len(prefix) :])

    def entry(self, name: str) -> Entry[T]:
        return self._entries[self.canonical(name)]

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        if name in self._entries or name in self._aliases:
            return True
        prefix = self.prefix_of(name)
        return prefix is not None and len(name) > len(prefix)

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())


def _providers() -> dict[tuple[str, str], str]:
    return getattr(metaprune, "PREFIX_PROVIDERS", {})

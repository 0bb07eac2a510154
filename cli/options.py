"""Typer options shared by several commands, and options whose default and help come from a config dataclass.

``config_option(HarvestConfig, "levels", number=positive_int)`` is ``--levels`` with ``HarvestConfig``'s help
and the ``positive_int("--levels")`` parser; the parameter's default is ``default_of(HarvestConfig, "levels")``
(Typer takes defaults from the signature, not from an ``Annotated`` option). ``note_default=True`` is for an
option whose CLI default is None ("not given") and whose real default is the config's: its help says it.
Every such option records the field it came from (``config_field``), so a test pins the two together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from metaprune.config import default_of, help_of

from .common import Number


def config_option(
    cls: type,
    name: str,
    *decls: str,
    number: Callable[[str], Number] | None = None,
    help: str | None = None,
    note_default: bool = False,
) -> Any:
    """A ``typer.Option`` for field ``name`` of config ``cls`` (dotted for nested configs: ``train.epochs``)."""
    decls = decls or (f"--{name.rpartition('.')[2].replace('_', '-')}",)
    text = help if help is not None else help_of(cls, name)
    if note_default:
        text = f"{text} (default {default_of(cls, name)})"
    info = typer.Option(*decls, parser=number(decls[0]) if number else None, help=text)
    info.config_field = (cls, name, note_default)
    return info


NetworkOpt = Annotated[str, typer.Option("--network", "-n", help="network spec, e.g. lenet_300_100 or mlp:500-300")]
DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="dataset name (see `metaprune list`)")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda, cuda:N")]
DataRootOpt = Annotated[
    str | None, typer.Option("--data-root", help="folder with torchvision datasets (default ./data)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")]

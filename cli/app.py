"""The ``metaprune`` command: Typer parses and prints, the library does the work."""

from __future__ import annotations

import sys

import typer

from metaprune.errors import MetapruneError, RuntimeFailure

from .common import OptionError, err

app = typer.Typer(
    help="Learn how to prune a network before training: harvest pruning scores, fit a meta-scorer, "
    "evaluate its tickets. --sparsity everywhere means the fraction of prunable weights that REMAIN "
    "(0.005 = 0.5 % kept), as in the thesis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: speed and memory targets are checked here, never by timed tests.")
app.add_typer(bench_app, name="bench")


COMMAND_MODULES = ("listing", "train", "prune", "harvest", "fit", "evaluate")


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(app, bench_app)


def main() -> None:
    """Run the CLI; library errors become one line on stderr and a non-zero exit code.

    Typer's standalone mode handles usage errors itself (a short message, exit code 2); numeric options
    are parsed by ``common.Number``, whose ``OptionError`` names the value typed and what is accepted.
    """
    _register_commands()
    try:
        app()
    except (MetapruneError, OptionError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except RuntimeFailure as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted; committed work is kept and a re-run resumes")
        sys.exit(130)


if __name__ == "__main__":
    main()

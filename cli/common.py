"""Shared CLI plumbing: one-line errors, numeric option parsers, rich output on the right streams, progress bars."""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

out = Console()
err = Console(stderr=True)


class EtaColumn(ProgressColumn):
    """Time left from the mean time per completed step so far. Rich's TimeRemainingColumn estimates
    from the last 30 s of updates, which shows nothing when one step (an evaluation seed) takes longer."""

    def render(self, task: Task) -> Text:
        if not task.total or not task.completed or task.elapsed is None:
            return Text("")
        if task.finished:
            return Text("done", style="progress.remaining")
        left = task.elapsed / task.completed * (task.total - task.completed)
        minutes, seconds = divmod(round(left), 60)
        return Text(f"ETA {minutes // 60}:{minutes % 60:02d}:{seconds:02d}", style="progress.remaining")


def passive_openmp() -> None:
    """Let idle OpenMP threads sleep instead of spin, unless the user chose (``OMP_WAIT_POLICY``).

    On a machine whose cores are shared with other jobs, spinning threads stall every parallel region
    while one of them is descheduled: population training measured 4-5x slower on 2 busy cores, and
    ~25 % faster on 2 idle ones. Harvests and benchmarks run for minutes on shared machines, so they
    take the robust setting. It only works before torch is imported, which the commands do lazily.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# ------------------------------------------------------------------------------------ numeric options


class OptionError(Exception):
    """A bad option value, found while the command line is parsed; ``main`` prints it on one line (exit 2).

    Deliberately not a ValueError: Typer's validation turns ValueErrors into its own boxed usage message,
    which drops the value that was typed.
    """

    exit_code = 2


@dataclass(frozen=True)
class Number:
    """A Typer ``parser`` for one numeric option: the type, a range, and what to say when it is not met.

    ``Number("--workers", int, low=1)`` accepts "3" and refuses "0", "x" and "2.5" with
    ``bad --workers '0'; accepted: a positive integer``.
    """

    option: str
    kind: type = int
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is refused (0 < x rather than 0 <= x)
    symbol: str = "x"  # the value's name in a range, e.g. "0 < sparsity <= 1"
    note: str = ""  # appended to what is accepted, e.g. what the value means

    def __call__(self, value: object) -> int | float:
        number = self._parse(value)
        if number is None or not self._in_range(number):
            raise OptionError(f"bad {self.option} {_shown(value)}; accepted: {self.accepted()}")
        return number

    def _parse(self, value: object) -> int | float | None:
        if isinstance(value, bool):
            return None
        if self.kind is int:
            if isinstance(value, int):
                return value
            try:
                return int(str(value).strip())
            except ValueError:
                return None
        try:
            number = float(str(value).strip()) if not isinstance(value, int | float) else float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None

    def _in_range(self, x: float) -> bool:
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return self.high is None or x <= self.high

    def accepted(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        if self.kind is int and self.low == 1 and self.high is None:
            text = "a positive integer"
        elif self.kind is not int and self.low == 0 and self.low_open and self.high is None:
            text = "a positive number"
        elif self.low is not None and self.high is not None:
            text = f"{noun} with {self.low:g} {'<' if self.low_open else '<='} {self.symbol} <= {self.high:g}"
        elif self.low is not None:
            text = f"{noun} {'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = noun
        return f"{text} ({self.note})" if self.note else text


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, str) else repr(str(value))


def positive_int(option: str, note: str = "") -> Number:
    return Number(option, int, low=1, note=note)


def non_negative_int(option: str, note: str = "") -> Number:
    return Number(option, int, low=0, note=note)


def positive_float(option: str, note: str = "") -> Number:
    return Number(option, float, low=0, low_open=True, note=note)


def density(option: str = "--sparsity") -> Number:
    note = "the fraction of weights kept, 0.005 = 0.5 %"
    return Number(option, float, low=0, high=1, low_open=True, symbol="sparsity", note=note)


# Zero workers used to mean "in-process" silently; one worker is the in-process run, so zero is refused.
WORKERS = positive_int("--workers", "1 runs in-process; default: one process per core, up to the tasks")


def workers_for(workers: int | None, scheduler: str | None, tasks: int) -> int | None:
    """``--workers`` as given, or by default one process per core up to ``tasks`` (None on a cluster)."""
    from metaprune.executor import auto_workers

    if workers is not None or scheduler:
        return workers
    return auto_workers(tasks)


# ----------------------------------------------------------------------------------------- progress


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Progress]:
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        EtaColumn(),
        TextColumn("{task.fields[status]}"),
        console=err,
        transient=False,
        disable=not err.is_terminal,
    )
    with bar:
        bar.add_task(description, total=total, status="")
        yield bar


# ----------------------------------------------------------------------------------- interruptions


def command_line() -> str:
    """The command as typed (re-running it resumes a resumable command)."""
    return shlex.join(["metaprune", *sys.argv[1:]])


@contextlib.contextmanager
def resumable(committed: Callable[[], str]) -> Iterator[None]:
    """Ctrl-C ends the command with one line: what is committed (``committed()``) and the command that
    resumes it; exit code 130."""
    try:
        yield
    except KeyboardInterrupt:
        try:
            state = committed()
        except Exception as exc:  # noqa: BLE001 - the interrupted state is best effort, the line is not
            state = f"committed work is kept ({exc})"
        err.print(escape(f"interrupted: {state}; resume with: {command_line()}"), highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Library warnings (``MetapruneWarning``) printed as one ``warning:`` line each."""
    from metaprune.errors import MetapruneWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MetapruneWarning)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, MetapruneWarning):
                    err.print(f"[yellow]warning:[/] {escape(str(w.message))}", highlight=False, soft_wrap=True)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)

"""Shared CLI plumbing: one-line errors, rich output on the right streams, progress bars."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
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

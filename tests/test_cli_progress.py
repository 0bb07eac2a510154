"""The progress bar's ETA column, on a hand-driven clock (no timing)."""

from rich.progress import Progress

from cli.common import EtaColumn


def test_eta_is_the_mean_time_per_step_times_the_steps_left():
    now = [100.0]
    progress = Progress(get_time=lambda: now[0], disable=True)
    task_id = progress.add_task("seeds", total=5)
    task = progress.tasks[0]
    column = EtaColumn()
    assert column.render(task).plain == ""  # nothing done yet: no estimate
    now[0] = 110.0
    progress.update(task_id, completed=2)  # 5 s a seed, 3 seeds left
    assert column.render(task).plain == "ETA 0:00:15"
    now[0] = 4100.0
    progress.update(task_id, completed=4)  # 1000 s a seed, one left
    assert column.render(task).plain == "ETA 0:16:40"
    progress.update(task_id, completed=5)
    assert column.render(task).plain == "done"

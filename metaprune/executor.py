"""One facade for running independent tasks: in-process, a local process pool, or a Dask cluster.

``get_executor(workers=None, scheduler=None)`` returns an :class:`Executor`; ``executor.map(fn, tasks)``
runs ``fn(task, emit)`` for every task and yields ``(index, result)`` in completion order. ``emit`` is a
callable a task may use to report progress events (small picklable dicts); they arrive at the caller's
``on_event``. Harvest and evaluate use it.

- in-process (default, ``workers`` None or 1, no scheduler; 0 or less is refused): tasks run one after another in this
  process; events arrive immediately.
- process pool (``workers=N`` > 1): ``concurrent.futures.ProcessPoolExecutor`` with the *spawn* context
  (no forked torch state); each worker sets ``torch.set_num_threads(max(1, cores // N))``. Events travel
  over a multiprocessing queue and are delivered while the caller waits.
- Dask (``scheduler="tcp://host:port"``): ``dask.distributed.Client(address, timeout=...)``; an address that
  does not answer is a one-line :class:`RuntimeFailure` after ``connect_timeout`` seconds (default 5).
  Each task sets torch's threads to its worker's thread count. Events are not forwarded (progress is per
  finished task).

A task that raises stops the run: pending tasks are cancelled and the exception reaches the caller
(``MetapruneError``/``RuntimeFailure`` unchanged; a lost worker process becomes a ``RuntimeFailure``).
Tasks must be top-level functions with picklable arguments for the pool and Dask.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import queue as queue_mod
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from metaprune.errors import MetapruneError, RuntimeFailure

Emit = Callable[[dict], None]
TaskFn = Callable[[Any, "Emit | None"], Any]
DEFAULT_CONNECT_TIMEOUT = 5.0


def _noop(event: dict) -> None:
    return None


class Executor:
    """Base class: ``map`` yields ``(index, result)`` as tasks finish."""

    kind = "base"

    def map(
        self, fn: TaskFn, tasks: Sequence[Any], on_event: Callable[[dict], None] | None = None
    ) -> Iterator[tuple[int, Any]]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind

    def close(self) -> None:
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InProcessExecutor(Executor):
    kind = "in-process"

    def map(self, fn, tasks, on_event=None):
        emit = on_event if on_event is not None else _noop
        for i, task in enumerate(tasks):
            yield i, fn(task, emit)


# ------------------------------------------------------------------------------------------- pool

_EVENT_QUEUE = None


def _pool_init(threads: int, events) -> None:
    global _EVENT_QUEUE
    import torch

    torch.set_num_threads(threads)
    _EVENT_QUEUE = events


def _pool_emit(event: dict) -> None:
    if _EVENT_QUEUE is not None:
        try:
            _EVENT_QUEUE.put_nowait(event)
        except Exception:  # pragma: no cover - a full or closed queue only loses a progress event
            pass


def _pool_call(fn: TaskFn, task: Any) -> Any:
    return fn(task, _pool_emit)


class PoolExecutor(Executor):
    kind = "process-pool"

    def __init__(self, workers: int) -> None:
        self.workers = int(workers)
        self.threads = max(1, (os.cpu_count() or 1) // self.workers)
        ctx = mp.get_context("spawn")
        self._events = ctx.Queue()
        self._pool = cf.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=ctx, initializer=_pool_init, initargs=(self.threads, self._events)
        )

    def describe(self) -> str:
        return f"process pool of {self.workers} workers x {self.threads} threads"

    def _drain(self, on_event) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except (queue_mod.Empty, OSError, ValueError):
                return
            if on_event is not None:
                on_event(event)

    def map(self, fn, tasks, on_event=None):
        futures = {self._pool.submit(_pool_call, fn, task): i for i, task in enumerate(tasks)}
        pending = set(futures)
        try:
            while pending:
                done, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
                self._drain(on_event)
                for fut in sorted(done, key=lambda f: futures[f]):
                    try:
                        result = fut.result()
                    except cf.process.BrokenProcessPool as exc:
                        raise RuntimeFailure(
                            f"a worker process died ({exc}); finished tasks are kept, re-run to resume"
                        ) from None
                    yield futures[fut], result
        finally:
            for fut in pending:
                fut.cancel()
            self._drain(on_event)

    def close(self, failed: bool = False) -> None:
        if failed:  # do not wait minutes for running tasks after an error: stop the workers
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                if proc.is_alive():
                    proc.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._events.close()

    def __exit__(self, exc_type, *exc) -> None:
        self.close(failed=exc_type is not None)


# ------------------------------------------------------------------------------------------- dask

_ADDRESS = re.compile(r"^(tcp|tls|inproc|ucx|ws|wss)://[^\s/]+$")


def _dask_call(fn: TaskFn, task: Any) -> Any:
    try:
        import torch
        from distributed import get_worker

        torch.set_num_threads(max(1, int(get_worker().state.nthreads)))
    except Exception:  # pragma: no cover - not inside a worker (tests calling directly)
        pass
    return fn(task, _noop)  # progress events of a remote task are not forwarded


class DaskExecutor(Executor):
    kind = "dask"

    def __init__(self, address: str, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        if not _ADDRESS.match(address or ""):
            raise MetapruneError(
                f"bad scheduler address {address!r}; accepted: PROTOCOL://HOST:PORT, e.g. tcp://10.0.0.5:8786"
            )
        try:
            from distributed import Client
        except ImportError:
            raise MetapruneError(
                "--scheduler needs dask.distributed, which is not installed; accepted: "
                "pip install 'metaprune[dist]', or run without --scheduler"
            ) from None
        self.address = address
        try:
            self.client = Client(address, timeout=f"{connect_timeout}s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise RuntimeFailure(
                f"no Dask scheduler answered at {address} within {connect_timeout:g} s "
                f"({type(exc).__name__}); accepted: the address a running `dask scheduler` prints"
            ) from None

    def describe(self) -> str:
        try:
            n = len(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        except Exception:  # pragma: no cover
            n = "?"
        return f"dask cluster at {self.address} ({n} workers)"

    def map(self, fn, tasks, on_event=None):
        from distributed import as_completed

        futures = [self.client.submit(_dask_call, fn, task, pure=False) for task in tasks]
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for fut in as_completed(futures, loop=self.client.loop):
                try:
                    result = fut.result()
                except (MetapruneError, RuntimeFailure):
                    raise
                except Exception as exc:
                    name = type(exc).__name__
                    if name in ("KilledWorker", "CommClosedError", "CancelledError", "FutureCancelledError"):
                        raise RuntimeFailure(
                            f"a Dask worker was lost ({name}: {exc}); finished tasks are kept, re-run to resume"
                        ) from None
                    raise
                yield index[fut.key], result
        finally:
            for fut in futures:
                if not fut.done():
                    fut.cancel()

    def close(self) -> None:
        try:
            self.client.close(timeout=5)
        except Exception:  # pragma: no cover - closing a broken connection
            pass


def auto_workers(tasks: int) -> int:
    """One worker process per core, no more than there are tasks (``--workers auto``, the CLI's default)."""
    return max(1, min(os.cpu_count() or 1, int(tasks)))


def get_executor(
    workers: int | None = None, scheduler: str | None = None, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> Executor:
    """The executor for ``workers``/``scheduler`` (they exclude each other)."""
    # Zero or negative workers is a mistake, never a quiet in-process run; one worker is the in-process run.
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise MetapruneError(
            f"bad --workers {workers!r}; accepted: a positive integer (1 runs in-process, as leaving it out does)"
        )
    if scheduler:
        if workers not in (None, 1):
            raise MetapruneError("--workers and --scheduler exclude each other; accepted: one of them")
        return DaskExecutor(scheduler, connect_timeout)
    if workers is None or workers == 1:
        return InProcessExecutor()
    return PoolExecutor(workers)


__all__ = ["DaskExecutor", "Executor", "InProcessExecutor", "PoolExecutor", "auto_workers", "get_executor"]

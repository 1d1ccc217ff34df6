"""Decode in worker processes while the main process runs the network: every core busy, memory bounded.

``DecodePool(load, workers)`` maps ``load(item)`` over items in ``workers`` processes and yields the results
in order. At most ``ahead`` items (and at least ``2 x workers`` tasks of ``chunk`` items) are in flight, so
a slow consumer (the network) holds the decoders back instead of letting decoded images pile up; ``ahead``
should cover one network batch, or the workers idle while the network runs. Whenever the calling process
would wait for a result, it takes the oldest task no worker has started and decodes it itself: on a 2-core
machine the one worker and the network's idle time then share the decoding, and both cores stay busy. ``load`` returns a small array (the
network input), or the ``BadImage`` it caught (``foundation.images.split_readable``); any other exception
in a worker stops the run with that worker's traceback. ``workers=0`` decodes in the calling process; so does a pool whose items prove cheap: the first ``PROBE`` items are
decoded here, timed, and the workers start only if an item took at least ``min_cost`` seconds.

Torch-free: ``tag.py`` uses it next to ONNX Runtime.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator

CHUNK = 4  # items per task: small, so the last task of a run leaves the network waiting briefly
# Below this many seconds per item a worker costs more than it saves (its results cross a pipe, and it takes
# CPU from the network): Fashion-MNIST's 28-px images (~0.3 ms) measured 10% slower with one worker.
MIN_COST = 0.002
# Items decoded here, timed, before deciding on workers: the cheaper of two (the first pays for lazy imports).
# Each is one camera photo (~30 ms) decoded while the other cores wait, so no more than that.
PROBE = 2


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """Decoding processes by default: the free cores minus the one the network runs on, at least 1."""
    return max(1, available_cores() - 1)


def _work(load: Callable, tasks, results, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the main process was killed: nobody will ever read our results
                return
            continue
        if task is None:
            return
        task_id, items = task
        try:
            results.put((task_id, [load(item) for item in items], None))
        except BaseException:  # noqa: BLE001 - reported to the main process, which raises it
            results.put((task_id, None, traceback.format_exc()))


class DecodePool:
    """Ordered, bounded ``map(load, items)`` over worker processes (``with DecodePool(...) as pool``)."""

    def __init__(self, load: Callable, workers: int, chunk: int = CHUNK, ahead: int = 0, min_cost: float = MIN_COST):
        self.load, self.workers, self.chunk = load, max(0, int(workers)), max(1, int(chunk))
        self.max_tasks = max(2 * self.workers, -(-int(ahead) // self.chunk))
        self.min_cost = min_cost
        self.probed = self.workers == 0  # whether the first items were timed (and the workers started or not)
        self._procs: list = []
        self._generation = 0  # tasks of an abandoned map() may still come back: they are dropped

    @property
    def active_workers(self) -> int:
        return len(self._procs)

    def _start(self) -> None:
        # fork: workers inherit ``load`` and what it refers to (a dataset, a transform) without pickling.
        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        self._tasks, self._results = ctx.Queue(), ctx.Queue()
        for _ in range(self.workers):
            proc = ctx.Process(target=_work, args=(self.load, self._tasks, self._results, os.getpid()), daemon=True)
            proc.start()
            self._procs.append(proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def map(self, items: Iterable) -> Iterator:
        """``load(item)`` for each item, in order."""
        pending = iter(items)
        if not self.probed:
            cheapest = float("inf")
            for _, item in zip(range(PROBE), pending):
                started = time.perf_counter()
                loaded = self.load(item)
                cheapest = min(cheapest, time.perf_counter() - started)
                yield loaded
            if cheapest == float("inf"):
                return  # nothing to map: decide next time
            self.probed = True
            if cheapest >= self.min_cost:
                self._start()
        if not self._procs:
            for item in pending:
                yield self.load(item)
            return
        self._generation += 1
        generation = self._generation
        in_flight, done, next_id, wanted = 0, {}, 0, 0
        exhausted = False
        while True:
            while not exhausted and in_flight < self.max_tasks:
                task = [item for _, item in zip(range(self.chunk), pending)]
                if not task:
                    exhausted = True
                    break
                self._tasks.put(((generation, next_id), task))
                next_id, in_flight = next_id + 1, in_flight + 1
            if wanted == next_id and exhausted:
                return
            while wanted not in done:
                try:
                    result = self._results.get_nowait()
                except queue.Empty:
                    try:  # nothing decoded is waiting: take the oldest task no worker has started, decode it here
                        (task_generation, task_id), task = self._tasks.get_nowait()
                    except queue.Empty:
                        result = self._get()
                    else:
                        if task_generation == generation:
                            done[task_id] = [self.load(item) for item in task]
                            in_flight -= 1
                        continue
                (task_generation, task_id), loaded, error = result
                if task_generation != generation:
                    continue
                in_flight -= 1
                if error:
                    raise RuntimeError(f"a decoding worker failed:\n{error}")
                done[task_id] = loaded
            yield from done.pop(wanted)
            wanted += 1

    def _get(self):
        while True:
            try:
                return self._results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in self._procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(
                        f"a decoding worker died (exit code {dead[0].exitcode}): out of memory? "
                        "retry with fewer --workers"
                    ) from None

    def close(self) -> None:
        if not self._procs:
            return
        for _ in self._procs:
            self._tasks.put(None)
        for proc in self._procs:
            proc.join(timeout=2)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        self._procs = []
        self._tasks.close()
        self._results.close()

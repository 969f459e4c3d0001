"""Where sweep tasks run: in this process, in a local process pool, or on a Ray cluster.

Every executor has the same small face, used by :mod:`prunelens.analysis.sweep.driver`: ``slots`` (how many
tasks to keep in flight), ``submit(task) -> concurrent.futures.Future`` of an
:class:`~prunelens.analysis.sweep.worker.Outcome`, ``cancel()`` (stop everything in flight: Ctrl-C) and
``close()``. Workers never write the store; they return entries and the driver writes them, so a
Ray cluster needs no folder shared by every node.

- ``InlineExecutor``: the driver computes each task itself (``--executor local``, one worker).
- ``PoolExecutor``: ``--executor local --workers N``: N worker processes, each limited to
  ``threads`` torch/OpenMP threads (parallel torch processes on few cores thrash otherwise);
  each watches its driver and exits when the driver is gone, even if it was killed outright.
- ``RayExecutor``: ``--executor ray [--address ADDR]``: one Ray task per store entry, asking for
  ``threads`` CPUs and, when the tasks run on CUDA, ``gpus_per_task`` GPUs. Ray reuses worker
  processes, and each keeps its opened models (:mod:`prunelens.analysis.sweep.worker`), so a model is loaded
  once per worker. Without an address a local Ray instance with ``workers`` CPUs is started (and
  stopped at the end); a Ray already initialised in this process is used as it is.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import types
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from prunelens.analysis.errors import PrunelensError
from prunelens.analysis.sweep import worker

# what every worker needs from the driver's environment (offline hub, precision, tokenizers)
FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "PRUNELENS_PRECISION",
                 "TRANSFORMERS_OFFLINE")


def worker_env() -> dict[str, str]:
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def local_device(device: str) -> str:
    """``auto`` is CUDA when this machine's torch sees a GPU, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class InlineExecutor:
    """Tasks computed one at a time by the driver itself (Ctrl-C stops the current one at once)."""

    slots = workers = 1
    name = "local"

    def __init__(self, device: str, store_dirs: tuple, threads: int | None = None):
        import torch

        self.device, self.store_dirs, self.threads = local_device(device), store_dirs, threads
        self._threads_before = torch.get_num_threads()  # this process's own setting, restored

    def submit(self, task) -> Future:
        future: Future = Future()
        try:
            future.set_result(worker.run_task(task, self.device, self.store_dirs, self.threads))
        except Exception as exc:  # reported (and retried) by the driver like any worker failure
            future.set_exception(exc)
        return future

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        import torch

        torch.set_num_threads(self._threads_before)


class PoolExecutor:
    """``workers`` spawned processes; each keeps its models between tasks.

    A worker that dies (killed for memory, a crash in native code) breaks the whole pool: its
    tasks and the others in flight fail with ``BrokenProcessPool`` and come back to the driver as
    failures (retried once), and the next submit starts a fresh pool."""

    name = "local"

    def __init__(self, workers: int, threads: int, device: str, store_dirs: tuple):
        self.slots = self.workers = workers
        self.threads = threads
        self.device, self.store_dirs = local_device(device), store_dirs
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        """A pool whose ``workers`` processes are all started now (spawned: no torch state is
        forked), while ``__main__`` is a bare module: spawn re-runs the parent's main file in
        every child, and a script without a main guard (a Streamlit page, a notebook's runner,
        a test's app script) must not run there. Started processes are never replaced, so no
        later spawn happens outside this."""
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_pool_init, initargs=(self.threads, worker_env(), os.getpid()))
        saved = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            started = [pool.submit(os.getpid) for _ in range(self.workers)]
        finally:
            sys.modules["__main__"] = saved
        wait(started)
        return pool

    def submit(self, task) -> Future:
        try:
            return self._pool.submit(worker.run_task, task, self.device, self.store_dirs)
        except BrokenProcessPool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()
            return self._pool.submit(worker.run_task, task, self.device, self.store_dirs)

    def cancel(self) -> None:
        processes = list(getattr(self._pool, "_processes", {}).values())  # no public handle in 3.11
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()  # running tasks die mid-way: they had written nothing
            process.join()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _pool_init(threads: int, env: dict[str, str], driver: int | None = None) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    if driver is not None:
        worker.die_with(driver)  # a driver killed outright (SIGKILL) takes its workers along
    worker.prepare(threads, env)


class RayExecutor:
    """One Ray task per store entry; the driver writes what they return."""

    name = "ray"

    def __init__(self, threads: int, device: str, store_dirs: tuple, address: str | None = None,
                 workers: int | None = None, gpus_per_task: float = 1.0):
        try:
            import ray
        except ImportError:
            raise PrunelensError("the ray executor needs Ray (pip install -e '.[ray]')") from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            try:
                ray.init(address=address, num_cpus=None if address else workers,
                         include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                         runtime_env={"env_vars": worker_env()})
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = f"at {address}" if address else "locally"
                raise PrunelensError(f"cannot start or reach a Ray cluster {where}: "
                                     f"{str(exc).splitlines()[0][:160]}") from None
            self._started = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        if device == "auto":  # GPUs are asked for whenever the cluster has them
            device = "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
        self.gpus = gpus_per_task if device.startswith("cuda") else 0
        # keep one task queued per slot beyond those running, so no CPU waits for the driver
        self.workers = max(1, cpus // threads)
        self.slots = self.workers * 2
        self.device, self.store_dirs, self.threads = device, store_dirs, threads
        self._remote = ray.remote(num_cpus=threads, num_gpus=self.gpus, max_retries=0,
                                  max_calls=0)(worker.run_task)
        self._refs: list = []

    def submit(self, task) -> Future:
        ref = self._remote.remote(task, self.device, self.store_dirs, self.threads)
        self._refs.append(ref)
        return ref.future()

    def cancel(self) -> None:
        for ref in self._refs:
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # already finished or gone: nothing to stop
                pass

    def close(self) -> None:
        self._refs.clear()
        if self._started:
            self._ray.shutdown()

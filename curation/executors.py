"""Where the heavy stages run: in this process, or on a Ray cluster. One small protocol for both.

A stage that can scale out is written as a pure function over one unit of work
(one book, one partition of rows, one LSH band) and hands the list of units to
an executor:

- `map(fn, items, shared=None)`: `[fn(item)]` (or `fn(item, shared)`), in the
  order of `items`. `shared` is one read-only value every call needs (a config,
  a set of known ids): Ray stores it once in its object store instead of
  shipping it with every task.
- `imap(...)`: the same results one at a time, in order, with a bounded number
  of tasks in flight, so a driver can consume (and free) each result as it comes.
- `workers(factory)`: a pool of stateful workers, each calling `factory()` once
  (load a model once, then encode many batches); `pool.map(fn, items)` calls
  `fn(state, item)`.

`LocalExecutor` runs everything in this process (or, for `map`, in a process
pool); `RayExecutor` uses Ray's own primitives: remote tasks, `ray.wait` to
bound what is in flight, actors in a `ray.util.ActorPool` for stateful
workers. Nothing here schedules work itself: where a task runs, retries and
data movement are Ray's business.

The functions handed to an executor must be importable module-level functions
(Ray pickles them by reference), and their inputs and results small or
columnar (polars frames, numpy arrays): large data moves as files on storage
every worker can read (see `curation.distributed`).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

EXECUTORS: tuple[str, ...] = ("local", "ray")
RAY_ADDRESS_ENV = "RAY_ADDRESS"  # Ray's own variable: `ray.init()` reads it too

_UNSET = object()


@runtime_checkable
class WorkerPool(Protocol):
    """Stateful workers: each built its state with `factory()` once; `map` calls `fn(state, item)`."""

    def map(self, fn: Callable[[Any, T], R], items: Iterable[T]) -> list[R]: ...

    def close(self) -> None: ...


@runtime_checkable
class Executor(Protocol):
    name: str

    @property
    def parallelism(self) -> int:
        """How many tasks can run at once (CPUs of the process pool or the Ray cluster)."""
        ...

    def map(self, fn: Callable[..., R], items: Iterable[Any], shared: Any = _UNSET) -> list[R]: ...

    def imap(self, fn: Callable[..., R], items: Iterable[Any], shared: Any = _UNSET) -> Iterator[R]: ...

    def workers(self, factory: Callable[[], Any], n: int | None = None) -> WorkerPool: ...

    def close(self) -> None: ...


# ---- local -------------------------------------------------------------------------------


class _InProcessPool:
    def __init__(self, factory: Callable[[], Any]):
        self.state = factory()

    def map(self, fn: Callable[[Any, T], R], items: Iterable[T]) -> list[R]:
        return [fn(self.state, item) for item in items]

    def close(self) -> None:
        self.state = None


def _call(fn: Callable[..., R], item: Any, shared: Any) -> R:
    return fn(item) if shared is _UNSET else fn(item, shared)


def _call_with(fn: Callable[..., R], shared: Any, item: Any) -> R:
    return fn(item, shared)


class LocalExecutor:
    """This machine. `processes=0` (default): in this process, one item after another.

    `processes=N`: `map`/`imap` in a pool of N worker processes (spawned, so that no
    thread state of the parent, torch's included, is forked); `workers` stays in
    this process (its state is typically a model already using every core).
    """

    name = "local"

    def __init__(self, processes: int = 0):
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
        self.processes = processes
        self._pool = None

    def __repr__(self) -> str:
        return f"LocalExecutor(processes={self.processes})"

    @property
    def parallelism(self) -> int:
        return max(self.processes, 1)

    def map(self, fn: Callable[..., R], items: Iterable[Any], shared: Any = _UNSET) -> list[R]:
        return list(self.imap(fn, items, shared))

    def imap(self, fn: Callable[..., R], items: Iterable[Any], shared: Any = _UNSET) -> Iterator[R]:
        if self.processes <= 1:
            return (_call(fn, item, shared) for item in items)
        import functools

        # The sentinel does not survive pickling: the pool gets `fn` itself, or fn bound to `shared`.
        call = fn if shared is _UNSET else functools.partial(_call_with, fn, shared)
        return self._process_pool().map(call, items)

    def workers(self, factory: Callable[[], Any], n: int | None = None) -> WorkerPool:
        return _InProcessPool(factory)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _process_pool(self):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# ---- Ray ---------------------------------------------------------------------------------


class _RayWorkerPool:
    """Actors, each holding `factory()`'s result, fed through Ray's ActorPool (results in input order)."""

    def __init__(self, factory: Callable[[], Any], n: int, num_cpus: float):
        import ray
        from ray.util import ActorPool

        actor_class = ray.remote(num_cpus=num_cpus)(_StatefulWorker)
        self._actors = [actor_class.remote(factory) for _ in range(max(n, 1))]
        self._pool = ActorPool(self._actors)

    def map(self, fn: Callable[[Any, T], R], items: Iterable[T]) -> list[R]:
        return list(self._pool.map(lambda actor, item: actor.call.remote(fn, item), list(items)))

    def close(self) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []


class _StatefulWorker:
    """The body of one Ray actor: builds its state once, then applies functions to it."""

    def __init__(self, factory: Callable[[], Any]):
        self.state = factory()

    def call(self, fn: Callable[[Any, T], R], item: T) -> R:
        return fn(self.state, item)


class RayExecutor:
    """A Ray cluster: an existing one (`address="auto"`, `"ray://head:10001"`, `$RAY_ADDRESS`) or a local one.

    address None and no `$RAY_ADDRESS`: a Ray instance is started on this machine with
    `num_cpus` CPUs (default: all), and shut down by `close()`. If Ray is already
    initialised in this process (a test fixture, a notebook), that instance is used
    as it is and left running.

    runtime_env: Ray's runtime environment for the tasks. Connecting to a cluster,
    the default ships this package (`curation`) to the workers, so nodes need the
    dependencies installed but not this checkout.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        max_in_flight: int | None = None,
        runtime_env: dict[str, Any] | None = None,
        task_cpus: float = 1,
    ):
        import ray

        self.address = address or os.environ.get(RAY_ADDRESS_ENV) or None
        self.task_cpus = task_cpus
        self._owns = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "warning"}
            if self.address is None:
                # "local": always a new instance; without it ray.init joins whatever cluster a
                # stale /tmp/ray/ray_current_cluster names.
                kwargs.update(address="local", num_cpus=num_cpus)
            else:
                kwargs["address"] = self.address
                if runtime_env is None:
                    runtime_env = {"py_modules": [_package_dir()]}
            if runtime_env is not None:
                kwargs["runtime_env"] = runtime_env
            ray.init(**kwargs)
            self._owns = True
        self.max_in_flight = max_in_flight
        self._remote: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, parallelism={self.parallelism})"

    @property
    def parallelism(self) -> int:
        import ray

        return max(int(ray.cluster_resources().get("CPU", 1) // self.task_cpus), 1)

    def map(self, fn: Callable[..., R], items: Iterable[Any], shared: Any = _UNSET) -> list[R]:
        return list(self.imap(fn, items, shared))

    def imap(self, fn: Callable[..., R], items: Iterable[Any], shared: Any = _UNSET) -> Iterator[R]:
        """Results in order; at most `max_in_flight` (default 4 per CPU) tasks submitted and not yet consumed.

        Bounding what is in flight is Ray's documented back-pressure pattern: results
        wait in the object store only until the driver takes them, so memory stays
        flat however many items there are.
        """
        import ray

        remote = self._remote_function(fn)
        shared_ref = None if shared is _UNSET else ray.put(shared)
        window = self.max_in_flight or 4 * self.parallelism
        pending: deque = deque()

        def generate() -> Iterator[R]:
            iterator = iter(items)
            exhausted = False
            while True:
                while not exhausted and len(pending) < window:
                    try:
                        item = next(iterator)
                    except StopIteration:
                        exhausted = True
                        break
                    pending.append(remote.remote(item) if shared_ref is None else remote.remote(item, shared_ref))
                if not pending:
                    return
                yield ray.get(pending.popleft())

        return generate()

    def workers(self, factory: Callable[[], Any], n: int | None = None) -> WorkerPool:
        return _RayWorkerPool(factory, n or self.parallelism, self.task_cpus)

    def close(self) -> None:
        import ray

        self._remote.clear()
        if self._owns and ray.is_initialized():
            ray.shutdown()
        self._owns = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _remote_function(self, fn: Callable[..., Any]):
        remote = self._remote.get(fn)
        if remote is None:
            import ray

            remote = self._remote[fn] = ray.remote(num_cpus=self.task_cpus)(fn)
        return remote


def _package_dir() -> str:
    import curation

    return os.path.dirname(os.path.abspath(curation.__file__))


def make_executor(name: str = "local", address: str | None = None, num_cpus: int | None = None) -> Executor:
    """The executor a `--executor` option names: "local" (this process) or "ray" (a cluster at `address`, or local)."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise RuntimeError("--executor ray needs Ray: pip install 'ray[default]'") from None
        return RayExecutor(address=address, num_cpus=num_cpus)
    raise ValueError(f"executor must be one of {EXECUTORS}, not {name!r}")


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """`items` cut into consecutive runs of `size` (the last shorter)."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    return [items[i : i + size] for i in range(0, len(items), size)]

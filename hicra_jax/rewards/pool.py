"""Sandboxed grading workers with hard per-item time limits (the imperative shell).

A `GraderPool` owns a few worker processes (`python -m hicra_jax.rewards._worker`,
fresh interpreters started with `subprocess`: no fork of the caller, no pickle,
no multiprocessing `__main__` re-import) that talk JSON lines over pipes. Each
`Check` goes to one idle worker; the calling thread waits on the pipe until the
item's deadline and, past it, kills the worker (SIGKILL) and starts a new one.
So the limit holds from any thread of any process (no SIGALRM in the caller), and
for work stuck inside C code (a big-integer power) too.

Failure semantics: a timeout, a worker that dies mid-item (its exit status is
reported) or a worker that cannot start gives the item reward 0, status
"timeout"/"error" and a logged reason; the worker is replaced and the pool keeps
working. Results of successful checks are cached (LRU, keyed by `Check.key()`),
so identical (answer, gold) pairs are graded once.

Startup: workers import math-verify and warm it up (about a second each) in
the background from the moment the pool is created; that time is not charged to
any item's limit (`startup_timeout_s` bounds it separately).
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import itertools
import json
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence

import hicra_jax
from hicra_jax.rewards.grades import (CORRECT, DEFAULT_TIMEOUT_S, ERROR, INCORRECT, NO_ANSWER,
                                      PARTIAL, TIMEOUT, Check, Grade, Plan)

logger = logging.getLogger("hicra_jax.rewards")

DEFAULT_MEMORY_LIMIT_MB = 2048
DEFAULT_STARTUP_TIMEOUT_S = 120.0
DEFAULT_CACHE_SIZE = 1 << 16
# The worker stops Python-level work itself at this fraction of the limit and
# stays alive; the parent kills it at the full limit.
SOFT_TIMEOUT_FRACTION = 0.85
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(hicra_jax.__file__)))


def default_num_workers() -> int:
  """min(4, number of CPUs): symbolic checks are a small share of grading."""
  return max(1, min(4, os.cpu_count() or 1))


class _WorkerTimeout(Exception):
  pass


class _WorkerDied(Exception):
  pass


class _Worker:
  """One worker process and its pipes; used by one thread at a time."""

  def __init__(self, memory_limit_mb: int):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "hicra_jax.rewards._worker", f"--memory-mb={memory_limit_mb}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
    os.set_blocking(self.proc.stdin.fileno(), False)
    self._buf = bytearray()
    self._ids = itertools.count()
    self.ready = False
    self.loaded: set[str] = {"math_verify"}
    self.started = time.monotonic()

  @property
  def pid(self) -> int:
    return self.proc.pid

  def describe_exit(self) -> str:
    code = self.proc.poll()
    if code is None:
      return "worker closed its output"
    if code < 0:
      try:
        return f"worker killed by {signal.Signals(-code).name}"
      except ValueError:
        return f"worker killed by signal {-code}"
    return f"worker exited with status {code}"

  def _readline(self, deadline: float) -> bytes:
    fd = self.proc.stdout.fileno()
    while True:
      i = self._buf.find(b"\n")
      if i >= 0:
        line = bytes(self._buf[:i])
        del self._buf[:i + 1]
        return line
      remaining = deadline - time.monotonic()
      if remaining <= 0:
        raise _WorkerTimeout()
      ready, _, _ = select.select([fd], [], [], remaining)
      if not ready:
        raise _WorkerTimeout()
      chunk = os.read(fd, 1 << 16)
      if not chunk:
        self.proc.wait(timeout=5)
        raise _WorkerDied(self.describe_exit())
      self._buf += chunk

  def _write(self, data: bytes, deadline: float) -> None:
    fd = self.proc.stdin.fileno()
    view = memoryview(data)
    while view:
      remaining = deadline - time.monotonic()
      if remaining <= 0:
        raise _WorkerTimeout()
      _, writable, _ = select.select([], [fd], [], remaining)
      if not writable:
        raise _WorkerTimeout()
      try:
        view = view[os.write(fd, view):]
      except BlockingIOError:
        continue
      except OSError as e:  # BrokenPipeError: the worker is gone
        raise _WorkerDied(self.describe_exit()) from e

  def wait_ready(self, timeout_s: float) -> None:
    if self.ready:
      return
    try:
      message = json.loads(self._readline(time.monotonic() + timeout_s))
    except ValueError as e:
      raise _WorkerDied(f"bad handshake from worker: {e}") from e
    if not isinstance(message, dict) or not message.get("ready"):
      raise _WorkerDied(f"bad handshake from worker: {message!r}")
    self.ready = True

  def call(self, request: dict, timeout_s: float) -> dict:
    rid = next(self._ids)
    data = json.dumps({**request, "id": rid}, ensure_ascii=True).encode() + b"\n"
    deadline = time.monotonic() + timeout_s
    self._write(data, deadline)
    while True:
      try:
        message = json.loads(self._readline(deadline))
      except ValueError as e:
        raise _WorkerDied(f"unreadable reply from worker: {e}") from e
      if isinstance(message, dict) and message.get("id") == rid:
        return message

  def kill(self) -> None:
    if self.proc.poll() is None:
      try:
        self.proc.kill()
      except OSError:
        pass
    try:
      self.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      pass
    for stream in (self.proc.stdin, self.proc.stdout):
      try:
        stream.close()
      except OSError:
        pass


class GraderPool:
  """Worker processes that run `Check`s under hard per-item time limits.

  Thread-safe: any number of threads may call `run` / `run_many`; each item
  holds one worker while it runs. Use as a context manager or call `close()`
  (the process-wide `default_pool()` is closed at exit).

  Args:
    num_workers: worker processes (default `default_num_workers()`).
    memory_limit_mb: address-space limit of each worker (0: none).
    startup_timeout_s: how long a worker may take to start (import and warm
      up math-verify) or to import a module a check needs.
    cache_size: successful results kept (LRU); 0 disables the cache.
    soft_timeout_fraction: the worker interrupts Python-level work itself at
      this fraction of an item's limit and survives (0 disables it: every
      overrun then kills the worker at the hard limit).
  """

  def __init__(self, num_workers: int | None = None, *,
               memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
               startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
               cache_size: int = DEFAULT_CACHE_SIZE,
               soft_timeout_fraction: float = SOFT_TIMEOUT_FRACTION):
    num_workers = default_num_workers() if num_workers is None else num_workers
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
      raise ValueError(f"num_workers must be an int >= 1, got {num_workers!r}")
    if memory_limit_mb < 0:
      raise ValueError(f"memory_limit_mb must be >= 0 (0: no limit), got {memory_limit_mb}")
    if not startup_timeout_s > 0:
      raise ValueError(f"startup_timeout_s must be > 0, got {startup_timeout_s}")
    if not 0.0 <= soft_timeout_fraction < 1.0:
      raise ValueError(f"soft_timeout_fraction must be in [0, 1), got {soft_timeout_fraction}")
    self.soft_timeout_fraction = float(soft_timeout_fraction)
    self.num_workers = num_workers
    self.memory_limit_mb = memory_limit_mb
    self.startup_timeout_s = float(startup_timeout_s)
    self.pid = os.getpid()
    self._cache_size = cache_size
    self._cache: collections.OrderedDict[str, dict] = collections.OrderedDict()
    self._lock = threading.Lock()
    self._closed = False
    self._all: set[_Worker] = set()
    self._idle: queue.Queue[_Worker] = queue.Queue()
    self.stats = collections.Counter()
    # Kills the workers when the pool is garbage collected or at exit, unless closed first.
    self._finalizer = weakref.finalize(self, _kill_all, self._all)
    for _ in range(num_workers):
      self._idle.put(self._spawn())

  # ------------------------------------------------------------ lifecycle

  def _spawn(self) -> _Worker:
    worker = _Worker(self.memory_limit_mb)
    with self._lock:
      self._all.add(worker)
    return worker

  def _retire(self, worker: _Worker) -> None:
    worker.kill()
    with self._lock:
      self._all.discard(worker)
      self.stats["restarts"] += 1

  def _count(self, name: str) -> None:
    with self._lock:
      self.stats[name] += 1

  @property
  def closed(self) -> bool:
    return self._closed

  def worker_pids(self) -> list[int]:
    """Process ids of the current workers (for monitoring and tests)."""
    with self._lock:
      return sorted(w.pid for w in self._all)

  def wait_ready(self) -> None:
    """Blocks until every idle worker has started (optional; `run` waits as needed)."""
    workers = []
    try:
      for _ in range(self.num_workers):
        workers.append(self._idle.get(timeout=self.startup_timeout_s))
      for worker in workers:
        try:
          worker.wait_ready(self.startup_timeout_s)
        except (_WorkerTimeout, _WorkerDied) as e:
          logger.warning("grading worker %d failed to start: %s", worker.pid, e)
    finally:
      for worker in workers:
        self._idle.put(worker)

  def close(self) -> None:
    """Kills the workers. Later `run` calls return an error grade."""
    with self._lock:
      self._closed = True
      workers = list(self._all)
      self._all.clear()
    _kill_all(workers)

  def __enter__(self) -> GraderPool:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  # ---------------------------------------------------------------- cache

  def _cache_get(self, key: str) -> dict | None:
    if not self._cache_size:
      return None
    with self._lock:
      value = self._cache.get(key)
      if value is not None:
        self._cache.move_to_end(key)
        self.stats["cache_hits"] += 1
      return value

  def _cache_put(self, key: str, value: dict) -> None:
    if not self._cache_size:
      return
    with self._lock:
      self._cache[key] = value
      self._cache.move_to_end(key)
      while len(self._cache) > self._cache_size:
        self._cache.popitem(last=False)

  # ------------------------------------------------------------------ run

  def run(self, check: Check, timeout_s: float | None = None) -> Grade:
    """Runs one check in a worker; never raises for a well-formed `Check`.

    Args:
      check: the request.
      timeout_s: hard limit in seconds from the moment a started worker
        receives the item (default `DEFAULT_TIMEOUT_S`).

    Returns:
      The `Grade`: from the worker's score, or reward 0 with status "timeout"
      or "error" and a reason.
    """
    timeout_s = _check_timeout(timeout_s)
    key = check.key()
    cached = self._cache_get(key)
    if cached is not None:
      return _to_grade(check, cached)
    worker = None
    while worker is None:
      if self._closed:
        return _failed(check, ERROR, "grading pool is closed")
      try:
        worker = self._idle.get(timeout=0.5)
      except queue.Empty:
        pass
    keep = True
    try:
      grade, keep = self._run_on(worker, check, key, timeout_s)
    except BaseException:
      keep = False
      raise
    finally:
      if keep and not self._closed:
        self._idle.put(worker)
      else:
        self._retire(worker)
        if not self._closed:
          self._idle.put(self._spawn())
    return grade

  def _run_on(self, worker: _Worker, check: Check, key: str,
              timeout_s: float) -> tuple[Grade, bool]:
    try:
      worker.wait_ready(self.startup_timeout_s)
      for module in check.needs:
        if module not in worker.loaded:
          reply = worker.call({"op": "load", "module": module}, self.startup_timeout_s)
          if not reply.get("ok"):
            return _failed(check, ERROR, f"worker cannot import {module}: "
                           f"{reply.get('detail', '')}"), True
          worker.loaded.add(module)
    except _WorkerTimeout:
      return _failed(check, ERROR, f"grading worker did not start within "
                     f"{self.startup_timeout_s:.0f}s"), False
    except _WorkerDied as e:
      return _failed(check, ERROR, f"grading worker failed to start: {e}"), False
    self._count("checks")
    request = {"op": check.op, **check.payload,
               "soft_timeout": self.soft_timeout_fraction * timeout_s}
    try:
      reply = worker.call(request, timeout_s)
    except _WorkerTimeout:
      self._count("timeouts")
      return _failed(check, TIMEOUT, f"no result within {timeout_s:g}s; worker killed"), False
    except _WorkerDied as e:
      self._count("errors")
      return _failed(check, ERROR, f"{e} while grading"), False
    if not reply.get("ok"):
      status = TIMEOUT if reply.get("status") == TIMEOUT else ERROR
      self._count("timeouts" if status == TIMEOUT else "errors")
      return _failed(check, status, str(reply.get("detail", ""))), True
    value = {"score": reply.get("score", 0.0), "detail": reply.get("detail", ""),
             "answer": reply.get("answer"), "no_answer": bool(reply.get("no_answer"))}
    self._cache_put(key, value)
    return _to_grade(check, value), True

  def run_many(self, checks: Sequence[Check], timeout_s: float | None = None) -> list[Grade]:
    """Runs checks concurrently on the workers; identical checks run once.

    Args:
      checks: the requests.
      timeout_s: per-item hard limit, as in `run`.

    Returns:
      One `Grade` per check, in order.
    """
    timeout_s = _check_timeout(timeout_s)
    unique: dict[str, Check] = {}
    for check in checks:
      unique.setdefault(check.key(), check)
    if len(unique) <= 1:
      results = {k: self.run(c, timeout_s) for k, c in unique.items()}
    else:
      with concurrent.futures.ThreadPoolExecutor(
          max_workers=min(self.num_workers, len(unique)),
          thread_name_prefix="hicra-grade") as executor:
        futures = {k: executor.submit(self.run, c, timeout_s) for k, c in unique.items()}
        results = {k: f.result() for k, f in futures.items()}
    out = []
    for check in checks:
      grade = results[check.key()]
      if grade.answer != check.answer and check.answer is not None:
        grade = Grade(grade.reward, grade.status, check.answer, grade.detail)
      out.append(grade)
    return out


def _kill_all(workers) -> None:
  for worker in list(workers):
    worker.kill()


def _check_timeout(timeout_s: float | None) -> float:
  if timeout_s is None:
    return DEFAULT_TIMEOUT_S
  if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
    raise ValueError(f"timeout_s must be a number > 0, got {timeout_s!r}")
  return float(timeout_s)


def _to_grade(check: Check, value: dict) -> Grade:
  try:
    score = float(value.get("score", 0.0))
  except (TypeError, ValueError):
    score = 0.0
  if not 0.0 <= score <= 1.0:  # also NaN
    return _failed(check, ERROR, f"checker returned an invalid score {value.get('score')!r}")
  status = CORRECT if score == 1.0 else INCORRECT if score == 0.0 else PARTIAL
  if value.get("no_answer") and score == 0.0:
    status = NO_ANSWER
  answer = check.answer if check.answer is not None else value.get("answer")
  return Grade(score, status, answer, str(value.get("detail") or ""))


def _failed(check: Check, status: str, detail: str) -> Grade:
  answer = check.answer if check.answer is None else check.answer[:80]
  logger.warning("grading %s check failed (%s): %s; answer %r", check.op, status, detail, answer)
  return Grade(0.0, status, check.answer, detail)


# ------------------------------------------------------------ default pool

_default_lock = threading.Lock()
_default: GraderPool | None = None


def default_pool() -> GraderPool:
  """The process-wide pool, started on first use (re-created in a forked child)."""
  global _default
  with _default_lock:
    if _default is None or _default.closed or _default.pid != os.getpid():
      _default = GraderPool()
    return _default


def configure_default_pool(**kwargs) -> GraderPool:
  """Replaces the process-wide pool by `GraderPool(**kwargs)` and returns it."""
  global _default
  with _default_lock:
    old, _default = _default, GraderPool(**kwargs)
  if old is not None and old.pid == os.getpid():
    old.close()
  return _default


def _close_default() -> None:
  with _default_lock:
    if _default is not None and _default.pid == os.getpid():
      _default.close()


atexit.register(_close_default)


def resolve(plan: Plan, *, timeout_s: float | None = None,
            pool: GraderPool | None = None) -> Grade:
  """The `Grade` of a plan: itself, or its `Check` run in `pool` (default pool if None)."""
  if isinstance(plan, Grade):
    return plan
  return (pool or default_pool()).run(plan, timeout_s)


def resolve_many(plans: Sequence[Plan], *, timeout_s: float | None = None,
                 pool: GraderPool | None = None) -> list[Grade]:
  """`resolve` for many plans; their checks run concurrently on the pool's workers."""
  indices = [i for i, p in enumerate(plans) if not isinstance(p, Grade)]
  out: list[Grade] = [p if isinstance(p, Grade) else None for p in plans]  # type: ignore[misc]
  if indices:
    grades = (pool or default_pool()).run_many([plans[i] for i in indices], timeout_s)
    for i, grade in zip(indices, grades):
      out[i] = grade
  return out

"""Preemption: SIGTERM only records a stop request; the trainer acts on it at
safe points (between decode segments, after an update), saves and returns."""

from __future__ import annotations

import signal as signal_lib
import threading
from typing import Sequence


class StopSignals:
  """Records the last of `signals` received while installed.

  Use as a context manager around a run: the handlers are installed on entry
  and the previous ones come back on exit.
  """

  def __init__(self, signals: Sequence[int] = (signal_lib.SIGTERM,)):
    self._signals = tuple(signals)
    self._received: int | None = None
    self._previous: dict[int, object] = {}

  @property
  def signal(self) -> int | None:
    """The signal that asked the run to stop; None while none has."""
    return self._received

  @property
  def stop_requested(self) -> bool:
    return self._received is not None

  def handle(self, signum: int, frame=None) -> None:  # pylint: disable=unused-argument
    """The signal handler (also callable directly, e.g. by a test)."""
    self._received = signum

  def install(self) -> None:
    """Handles the signals from now on. Python runs handlers on the main thread
    only, so from another thread (a driver running trainers in threads) nothing
    is installed."""
    if threading.current_thread() is threading.main_thread():
      self._previous = {sig: signal_lib.signal(sig, self.handle) for sig in self._signals}

  def restore(self) -> None:
    """Puts back the handlers `install` replaced."""
    for sig, handler in self._previous.items():
      signal_lib.signal(sig, handler)
    self._previous = {}

  def __enter__(self) -> StopSignals:
    self.install()
    return self

  def __exit__(self, *exc_info) -> None:
    self.restore()

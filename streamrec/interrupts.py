"""Ctrl-C and SIGTERM from the first instant: a stop is recorded, then handed to what runs.

The CLI installs the handler before anything else, so a signal during imports, model loading
or the wait for a subscriber never ends the process with a traceback: commands check
`requested()` and finish cleanly, and a running pipeline is stopped through `on_stop`; a
command with no clean stop is ended by `raise_on_stop`. A second signal while a clean stop is
under way exits at once, with status 130.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

_received: int | None = None  # the first signal's number
_listeners: list[Callable[[], None]] = []
_raise = False  # the command has no clean stop: a signal ends it at once (`raise_on_stop`)


def install() -> None:
    """Take over SIGINT and SIGTERM (only the main thread can)."""
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, _handle)


def requested() -> bool:
    """A stop was asked for."""
    return _received is not None


def on_stop(listener: Callable[[], None]) -> Callable[[], None]:
    """Call ``listener`` on a stop (at once if one was already asked for); returns its remover.
    It runs in a signal handler: it must only set flags or wake threads."""
    _listeners.append(listener)
    if _received is not None:
        listener()
    return lambda: _listeners.remove(listener)


def raise_on_stop(on: bool = True) -> None:
    """For a command that never checks `requested()` (a benchmark, training, an export): a stop
    raises `KeyboardInterrupt` in the main thread, so Ctrl-C or SIGTERM ends it, its ``with`` and
    ``finally`` blocks run, and the CLI exits 130. Without this, one signal did nothing. ``on``
    False: a stop is only recorded (a command that stops cleanly)."""
    global _raise
    _raise = on
    if on and _received is not None:
        raise KeyboardInterrupt


def _handle(number: int, _frame) -> None:
    global _received
    if _received is not None:
        sys.stderr.write("streamrec: interrupted again; exiting without a clean stop\n")
        os._exit(130)
    _received = number
    for listener in list(_listeners):
        listener()
    if _raise:
        raise KeyboardInterrupt

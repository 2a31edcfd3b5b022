"""Loaded (through PYTHONPATH) only by .ci/run's runs under faketime.

libfaketime 0.9.10 (Debian 12) with a faked monotonic clock makes every
timed wait of Python's threads (sem_clockwait on CLOCK_MONOTONIC) hang for
the clock's offset, so those runs leave the monotonic clock alone
(FAKETIME_DONT_FAKE_MONOTONIC=1); then its clock_nanosleep() refuses the
absolute monotonic deadlines time.sleep() passes (EINVAL). time.sleep() is
therefore a timed wait here: the same pause, on the real monotonic clock.
"""

import os
import threading
import time

if os.environ.get("FAKETIME") and os.environ.get("FAKETIME_DONT_FAKE_MONOTONIC") == "1":

    def _sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        threading.Event().wait(seconds)

    time.sleep = _sleep

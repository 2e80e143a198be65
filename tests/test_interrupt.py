"""Ctrl-C stops a command even when Python loses the KeyboardInterrupt."""

from __future__ import annotations

import os
import signal
import time

import pytest

from mirrorkit.interrupt import Interrupted, check, handling_ctrl_c


def test_a_lost_keyboard_interrupt_still_stops_the_next_unit_of_work() -> None:
    before = signal.getsignal(signal.SIGINT)
    with handling_ctrl_c():
        check()                                  # nothing pressed yet
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)                        # the handler interrupts this
            pytest.fail("SIGINT did not interrupt")
        except KeyboardInterrupt:
            pass                                 # swallowed, as when it lands in a finaliser
        with pytest.raises(Interrupted) as info:
            check()
        assert info.value.exit_code == 130 and str(info.value) == "interrupted"
    check()                                      # the next command starts clean
    assert signal.getsignal(signal.SIGINT) is before

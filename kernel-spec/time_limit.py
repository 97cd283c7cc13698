# Prepended to kernel-mcp's helpers that look at user values (variables.py, inspect.py): a
# time limit on that look, so a repr or attribute that blocks (a lazy or remote proxy) is cut
# off in the kernel, not left running there. An alarm, so only in the main thread (where the
# kernel runs code) and where setitimer exists; the user's own SIGALRM handler and timer are
# put back afterwards.
import signal as _signal
import threading as _threading


class _Slow(BaseException):
    """Raised by the alarm when looking at a value takes too long."""


def _on_alarm(signum, frame):
    raise _Slow()


def _arm(seconds):
    """Raises _Slow in `seconds`; what _disarm needs to put things back, or None."""
    if not hasattr(_signal, "setitimer") or _threading.current_thread() is not _threading.main_thread():
        return None
    handler = _signal.signal(_signal.SIGALRM, _on_alarm)
    timer = _signal.setitimer(_signal.ITIMER_REAL, seconds)
    return handler, timer


def _disarm(state):
    if state is None:
        return
    handler, timer = state
    _signal.setitimer(_signal.ITIMER_REAL, 0)
    _signal.signal(_signal.SIGALRM, handler)
    if timer[0] > 0:
        _signal.setitimer(_signal.ITIMER_REAL, *timer)

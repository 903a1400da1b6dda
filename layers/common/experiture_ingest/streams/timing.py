"""Time budgets: a call starts only if its worst case fits in what is left of the invocation.

A Lambda that times out mid-call leaves work half done (a request accepted but untracked, dead
letters half sent) and fails the whole batch. So before each step the writer and the settler ask
whether the step's worst case (the API's retry budget plus a last attempt's timeouts, or an AWS
call's) still fits; if not, the step's messages go back to the queue, unstarted.

>>> left = iter([100_000, 20_000])
>>> budget = Budget(lambda: next(left), reserve_seconds=5)
>>> budget.fits(90), budget.fits(90)
(True, False)
>>> Budget(None).fits(10_000)
True
"""

from __future__ import annotations

from collections.abc import Callable


class Budget:
    """What is left of one invocation (``remaining_ms``: the context's ``get_remaining_time_in_millis``).

    ``reserve_seconds`` is kept back for the steps that must still run after the last one started
    (sending the dead letters decided so far, returning the answer).
    """

    def __init__(self, remaining_ms: Callable[[], int] | None, *, reserve_seconds: float = 0.0) -> None:
        self._remaining_ms = remaining_ms
        self.reserve_seconds = reserve_seconds

    def left_seconds(self) -> float | None:
        return None if self._remaining_ms is None else self._remaining_ms() / 1000

    def fits(self, worst_seconds: float) -> bool:
        """Whether a step that may take ``worst_seconds`` can start now."""
        left = self.left_seconds()
        return left is None or left >= worst_seconds + self.reserve_seconds

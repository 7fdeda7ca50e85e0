"""SlackPlanner: the batching slack the gateway grants members, since it waits for the slowest anyway."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the client imports this module; at run time answers are only read, never built here
    from shared.gateway.client import MemberAnswer


class SlackPlanner:
    """How long each member may hold a request for batch company: the gateway waits for the slowest anyway.

    Under concurrent load the CLIP members see requests one at a time, at the OCR member's pace, and could
    not batch; granted a share of the slowest member's latency as slack they do (BENCHMARKS.md). Latencies
    are tracked without the time a member held the request, so granting slack never feeds back into it.
    """

    SMOOTHING = 0.2  # weight of the newest answer in the moving average
    CLEARLY_FASTER = 2.0  # a member gets slack only if the slowest takes at least this many times as long

    def __init__(self, share: float, max_slack_ms: float):
        self.share = share
        self.max_slack_ms = max_slack_ms
        self._lock = threading.Lock()
        self._latency_ms: dict[str, float] = {}  # moving average per member, answers only, hold excluded

    def observe(self, answer: MemberAnswer) -> None:
        """Fold one member answer into that member's pace."""
        if answer.rejected:  # the input was bad: says nothing about the member's pace
            return
        with self._lock:
            if not answer.ok:  # unknown again until it answers: a failing member must not set anyone's slack
                self._latency_ms.pop(answer.name, None)
                return
            latency = max(0.0, answer.latency_ms - answer.batch_wait_ms)
            previous = self._latency_ms.get(answer.name, latency)
            self._latency_ms[answer.name] = previous + self.SMOOTHING * (latency - previous)

    def plan(self, concurrent: int) -> dict[str, float]:
        """{member: slack ms} for a request while `concurrent` requests (it included) are in flight."""
        if self.share <= 0 or concurrent < 2:  # alone, a held request would only wait
            return {}
        with self._lock:
            latency = dict(self._latency_ms)
        if len(latency) < 2:
            return {}
        slowest = max(latency.values())
        slack = min(self.share * slowest, self.max_slack_ms)
        return {name: round(slack, 1) for name, ms in latency.items() if ms * self.CLEARLY_FASTER <= slowest}

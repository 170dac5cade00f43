"""In-process wake-ups: a claim long-poll or a log follower sleeps on a topic until something
publishes to it. Lives on the server's event loop; publish from that loop only.

It only shortens waits. The feed (fetchml.events.feed) publishes here what other servers on
the same PostgreSQL committed, so waits end on their changes too; every waiter still re-checks
the database on a long timeout (`SAFETY_RECHECK`), in case a wake-up was lost with a dropped
LISTEN connection.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class EventBus:
    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)

    def listen(self, topic: str) -> asyncio.Future[None]:
        """Subscribe before checking state, then await the future: no publish is missed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[topic].add(fut)
        fut.add_done_callback(lambda f: self._discard(topic, f))
        return fut

    def _discard(self, topic: str, fut: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(topic)
        if waiters is not None:
            waiters.discard(fut)
            if not waiters:
                self._waiters.pop(topic, None)

    def publish(self, *topics: str) -> None:
        for topic in topics:
            for fut in list(self._waiters.get(topic, ())):
                if not fut.done():
                    fut.set_result(None)

    def publish_all(self) -> None:
        """Everything may have changed (the cross-server link was down): every waiter looks again."""
        self.publish(*list(self._waiters))

    @staticmethod
    async def wait(fut: asyncio.Future[None], timeout: float) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            fut.cancel()


SAFETY_RECHECK = 10.0  # seconds a waiter sleeps without any wake-up before it looks anyway
TASKS_TOPIC = "tasks"  # a task was queued or capacity was freed: claimers should look again
# A Jupyter service was asked for, stopped or ended, or capacity came free: service claimers look
# again. Not woken by task submissions, which cannot help a queued service (and at hundreds a
# second would cost every worker's service long-poll a write each).
SERVICES_TOPIC = "services"


def task_topic(task_id: str) -> str:
    return f"task:{task_id}"

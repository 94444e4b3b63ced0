"""What the broker holds: which of some job ids still have a message in a queue or delivered and not
yet acknowledged. Used by the sweep to tell a queued job whose message was lost (Redis restarted
empty, or flushed) from one that simply waits its turn.

Redis only (kombu keeps a queue as a list named after it and delivered messages in the `unacked`
hash); for any other transport every id is reported present, so nothing is sent twice by guess.
"""
from __future__ import annotations

from collections.abc import Iterable

import redis


def messages_naming(broker_url: str, queue: str, job_ids: Iterable[str]) -> set[str]:
    """The ids among `job_ids` that some message in `queue` (waiting or unacknowledged) names."""
    wanted = set(job_ids)
    if not wanted:
        return set()
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return wanted
    client = redis.Redis.from_url(broker_url, socket_timeout=10, socket_connect_timeout=5)
    try:
        raw = list(client.lrange(queue, 0, -1)) + list(client.hvals("unacked"))
    finally:
        client.close()
    found = set()
    for message in raw:
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
        found.update(i for i in wanted if i in text)  # the id is in the message's argsrepr header
    return found

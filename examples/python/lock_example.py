"""A fenced lock with server-side waiting, from Python (redis-py).

Run against a server with the lock module loaded:

    REDIS_URL=redis://127.0.0.1:6379/ python lock_example.py

It takes a lock, waits in the server's queue for a lock someone else holds
(LOCK.ACQUIRE ... WAIT), renews it (LOCK.EXTEND), releases it, and shows what a too-short
socket_timeout does to a WAIT. It checks every step and exits non-zero on a
surprise; the last line is "python example: ok".

The one thing to get right: redis-py's ``socket_timeout`` is how long it
waits for any reply. A WAIT is a reply that comes late on purpose: when
socket_timeout is shorter than the WAIT, redis-py gets a TimeoutError,
closes the connection (the server drops the waiter) and, by default (in
redis-py 7.4.1, pinned here: 3 retries on TimeoutError and ConnectionError),
sends the same command again on a new connection, silently, up to three
times, before it raises. The server keeps a returning waiter's place for
1 s, which limits the harm, but the caller waits in slices it did not ask
for and gets an error instead of the lock. So the client that sends a WAIT
must have ``socket_timeout`` longer than the wait (here: the WAIT plus 5 s),
and should be a client of its own: a blocked connection serves no one else.
"""

import os
import secrets
import threading
import time

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/")
KEY = "examples:python:" + secrets.token_hex(4)
TTL_MS = 10_000
WAIT_MS = 5_000


def new_token() -> str:
    return secrets.token_hex(16)


def acquire(client, token, wait_ms=None):
    """The fence (an int), or None when the lock is someone else's."""
    args = ["LOCK.ACQUIRE", KEY, token, TTL_MS]
    if wait_ms is not None:
        args += ["WAIT", wait_ms]
    return client.execute_command(*args)


def check(cond, what):
    if not cond:
        raise SystemExit(f"python example: FAILED: {what}")
    print(f"ok: {what}")


def lock_stats(client):
    info = client.info("lock_stats")
    return info["lock_waits"], info["lock_wait_disconnects"]


def main():
    # Short commands: a short timeout is fine.
    r = redis.Redis.from_url(URL, socket_timeout=2)
    # The client that waits: socket_timeout longer than any WAIT it sends.
    waiter = redis.Redis.from_url(URL, socket_timeout=WAIT_MS / 1000 + 5)

    # Someone else holds the lock and releases it after 0.5 s.
    other = new_token()
    other_fence = acquire(r, other)
    check(isinstance(other_fence, int), f"another worker holds the lock, fence {other_fence}")
    threading.Timer(0.5, lambda: r.execute_command("LOCK.RELEASE", KEY, other)).start()

    # We wait for it in the server's queue: no polling, first come first served.
    token = new_token()
    t = time.monotonic()
    fence = acquire(waiter, token, WAIT_MS)
    waited = time.monotonic() - t
    check(fence is not None and fence > other_fence,
          f"got the lock after {waited:.1f} s of WAIT, with a larger fence")

    # Work, sending the fence with every write to the protected resource;
    # renew before the TTL ends with LOCK.EXTEND: the fence back means still
    # ours, None means lost (stop working); it never takes a lapsed lock.
    check(r.execute_command("LOCK.EXTEND", KEY, token, TTL_MS) == fence,
          "renewed with LOCK.EXTEND: the same fence")
    remaining = r.execute_command("LOCK.CHECK", KEY, token)
    check(remaining > TTL_MS - 2_000, "LOCK.CHECK: the TTL was reset")

    check(r.execute_command("LOCK.RELEASE", KEY, token) == 1, "released")
    check(r.execute_command("LOCK.RELEASE", KEY, token) == 0, "a second release is refused")

    # What a socket_timeout shorter than the WAIT does. redis-py's default is
    # 3 retries on TimeoutError with back-offs of up to 2, 4 and 8 s; the
    # same retries with short back-offs keep this part fast.
    holder = new_token()
    acquire(r, holder)
    impatient = redis.Redis.from_url(
        URL,
        socket_timeout=0.3,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.2), 3),
    )
    waits, disconnects = lock_stats(r)
    try:
        acquire(impatient, new_token(), WAIT_MS)
        check(False, "a 0.3 s socket_timeout cannot see a 5 s WAIT through")
    except redis.exceptions.TimeoutError:
        pass
    waits2, disconnects2 = lock_stats(r)
    check(waits2 - waits >= 2,
          f"socket_timeout 0.3 s < WAIT 5 s: redis-py sent the WAIT {waits2 - waits} times, "
          f"dropped {disconnects2 - disconnects} connections, then raised TimeoutError")
    r.execute_command("LOCK.RELEASE", KEY, holder)
    print("python example: ok")


if __name__ == "__main__":
    main()

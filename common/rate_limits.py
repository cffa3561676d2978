"""Rate limits counted across every web process, that never take a page down with them.

A moving window (the `limits` library's `MovingWindowRateLimiter`): a request is allowed when
fewer than the limit were allowed in the last window, however the clock's minutes fall, so a
guesser cannot double the limit across a minute's turn as a fixed window lets them. The hits
are kept in the shared Redis (`RATE_LIMIT_STORAGE_URL`, REDIS_URL's server), so every worker
counts together. When Redis cannot be reached the limit is counted in this process alone (a
guesser then gets the limit per web process, not unlimited tries), that is logged once, and
Redis is tried again after `SHARED_RETRY_SECONDS`: a page is never an error for want of it.
"""

import logging
import threading
import time

from django.conf import settings
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

logger = logging.getLogger(__name__)

# How long the shared store is left alone after a failure: each request would otherwise wait
# for a refused or timed-out connection.
SHARED_RETRY_SECONDS = 10
# A request never waits longer than this for the shared store.
SHARED_TIMEOUT_SECONDS = 0.5


class _Stores:
    """This process's stores: the shared one (built on first use, per URL) and its own."""

    def __init__(self):
        self.lock = threading.Lock()
        self.shared_url = None
        self.shared: Storage | None = None
        self.shared_down_until = 0.0
        self.local = MemoryStorage()

    def shared_store(self, *, even_if_down: bool = False) -> Storage | None:
        """The shared store, or None: none is configured (`make run` counts in each process),
        or it failed less than SHARED_RETRY_SECONDS ago."""
        url = settings.RATE_LIMIT_STORAGE_URL
        if not url:
            return None
        with self.lock:
            if url != self.shared_url:
                self.shared_url, self.shared_down_until = url, 0.0
                self.shared = storage_from_string(
                    url,
                    socket_connect_timeout=SHARED_TIMEOUT_SECONDS,
                    socket_timeout=SHARED_TIMEOUT_SECONDS,
                )
            if not even_if_down and time.monotonic() < self.shared_down_until:
                return None
            return self.shared

    def shared_failed(self, error: Exception) -> None:
        with self.lock:
            first = self.shared_down_until == 0.0
            self.shared_down_until = time.monotonic() + SHARED_RETRY_SECONDS
        if first:
            logger.warning(
                "Rate limits are counted in this process alone: the shared store cannot be "
                "reached (%s). Tried again every %d s.",
                error.__class__.__name__,
                SHARED_RETRY_SECONDS,
            )

    def shared_answered(self) -> None:
        if self.shared_down_until:
            with self.lock:
                self.shared_down_until = 0.0
            logger.warning("Rate limits are counted in the shared store again.")


_stores = _Stores()


class RateLimit:
    """`limit` in the `limits` notation ("30/minute"), per `scope` and identifier."""

    def __init__(self, scope: str, limit: str):
        self.scope = scope
        self.item: RateLimitItem = parse(limit)

    def allows(self, identifier: str) -> bool:
        """Count one request of `identifier`; whether it is within the limit."""
        shared = _stores.shared_store()
        if shared is not None:
            try:
                allowed = MovingWindowRateLimiter(shared).hit(self.item, self.scope, identifier)
            except Exception as error:  # any failure of the store: count here instead
                _stores.shared_failed(error)
            else:
                _stores.shared_answered()
                return allowed
        return MovingWindowRateLimiter(_stores.local).hit(self.item, self.scope, identifier)


def shared_store_answers() -> bool | None:
    """Whether the shared store answers now (for /healthz); None when none is configured."""
    store = _stores.shared_store(even_if_down=True)
    return None if store is None else store.check()


def rate_limits_reset() -> None:
    """Forget this process's own counts (tests: each counts from zero)."""
    _stores.local.reset()

"""Reading from a streaming replica (DATABASE_REPLICA_URL), never writing to it.

The heavy reads that may be a few seconds old run inside `replica_reads()`: the weekly
report, the CSV and FHIR exports, the calendar feed and the capacity heat map. Everything
else reads the primary, and every write goes to the primary, inside the block too (the kept
figures of a week, a calendar link's last use). Each block first asks how far the replica's
data is behind the primary's; a replica further behind than DATABASE_REPLICA_MAX_LAG_SECONDS,
or down, or no longer a replica at all, is passed over for the primary, with a log line, so a
figure is never read from data older than the bound. The block yields where it reads from and
how far behind that is, for the page to say.
"""

import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Iterator
from contextvars import ContextVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.utils import timezone

logger = logging.getLogger(__name__)

REPLICA = "replica"

# The alias reads go to inside a `replica_reads()` block of this thread or task; None outside.
_reading_from: ContextVar[str | None] = ContextVar("reading_from", default=None)


@dataclasses.dataclass(frozen=True)
class ReadSource:
    """Where a block read from, and how old the data it read may be."""

    alias: str
    behind_seconds: float  # how far the data read is behind the primary's; 0 on the primary
    checked_at: dt.datetime

    @property
    def from_replica(self) -> bool:
        return self.alias == REPLICA

    @property
    def data_as_of(self) -> dt.datetime:
        """The moment the data read was current, at worst."""
        return self.checked_at - dt.timedelta(seconds=self.behind_seconds)


def replica_configured() -> bool:
    return REPLICA in settings.DATABASES


def replica_usable(*, behind_seconds: float | None, bound_seconds: float) -> bool:
    """Whether a replica that is `behind_seconds` behind the primary may be read (None: it
    could not be asked, or is not a replica)."""
    return behind_seconds is not None and behind_seconds <= bound_seconds


def replica_behind_seconds() -> float | None:
    """How far the replica's data is behind the primary's now, in seconds: 0 when it has
    replayed everything the primary had written when asked, else the age of the last
    transaction it replayed. None when it is not a replica (a promoted copy is not ours to
    read). Raises DatabaseError when either server cannot be reached."""
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()")
        primary_position = cursor.fetchone()[0]
    with connections[REPLICA].cursor() as cursor:
        cursor.execute(
            "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() >= %s::pg_lsn,"
            " EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())",
            [primary_position],
        )
        in_recovery, caught_up, last_replayed_age = cursor.fetchone()
    if not in_recovery:
        return None
    if caught_up:
        return 0.0
    # Nothing replayed yet since it started: as far behind as can be said.
    return float(last_replayed_age) if last_replayed_age is not None else float("inf")


def read_source_primary() -> ReadSource:
    """Reads on the primary, now: for a page that may show either."""
    return ReadSource(DEFAULT_DB_ALIAS, 0.0, timezone.now())


def read_source(*, purpose: str) -> ReadSource:
    """Where `purpose`'s reads go now: the replica if it is configured, answers and is within
    the bound, else the primary (saying why in the log)."""
    primary = read_source_primary()
    now = primary.checked_at
    if not replica_configured():
        return primary
    bound = settings.DATABASE_REPLICA_MAX_LAG_SECONDS
    try:
        behind = replica_behind_seconds()
    except DatabaseError as error:
        connections[REPLICA].close()
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        logger.warning("Reading %s from the primary: the replica is down (%s)", purpose, first_line)
        return primary
    if behind is None:
        logger.warning("Reading %s from the primary: the replica is not in recovery", purpose)
        return primary
    if not replica_usable(behind_seconds=behind, bound_seconds=bound):
        logger.warning(
            "Reading %s from the primary: the replica is %.0f s behind (bound %d s)",
            purpose,
            behind,
            bound,
        )
        return primary
    return ReadSource(REPLICA, behind, now)


@contextlib.contextmanager
def replica_reads(*, purpose: str) -> Iterator[ReadSource]:
    """Inside, reads go to the replica when it is fit to read (see `read_source`); writes
    always go to the primary. Yields where the reads go."""
    source = read_source(purpose=purpose)
    token = _reading_from.set(source.alias)
    try:
        yield source
    finally:
        _reading_from.reset(token)


@contextlib.contextmanager
def reading_from(source: ReadSource) -> Iterator[ReadSource]:
    """Inside, reads go where `source` chose moments ago (the rest of one page: a report's
    CSV rows read where its figures were), without asking the replica again."""
    token = _reading_from.set(source.alias)
    try:
        yield source
    finally:
        _reading_from.reset(token)


class ReplicaRouter:
    """DATABASE_ROUTERS: reads inside `replica_reads()` go where it chose, unless a
    transaction on the primary is open; every write, and every read outside, to the primary.
    Migrations run on the primary only (a replica copies them)."""

    def db_for_read(self, model, **hints):
        alias = _reading_from.get() or DEFAULT_DB_ALIAS
        if alias == REPLICA and connections[DEFAULT_DB_ALIAS].in_atomic_block:
            # A transaction on the primary is writing: what it reads must include its writes.
            return DEFAULT_DB_ALIAS
        return alias

    def db_for_write(self, model, **hints):
        # Explicitly: an object read from the replica is saved to the primary.
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints):
        return True  # the same rows either side

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == DEFAULT_DB_ALIAS

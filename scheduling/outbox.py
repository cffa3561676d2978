"""Writing to the outbox: the one rule every writer goes through. A message is written once per
idempotency key, ever: a key the outbox holds is left alone, and a key the archive holds (a
message settled and moved there, purged or not) is never written again.

Beside the archiver, without a lock: a writer inserts first and then drops any row whose key
the archive holds. An archive batch deletes its rows from the outbox and inserts them into the
archive in one statement, so a writer that meets the key in the outbox's unique index while
the batch runs waits for it to commit, inserts, and then finds the key in the archive (on
PostgreSQL each statement of a READ COMMITTED transaction sees what committed before it).
"""

import hashlib
from collections.abc import Iterable

from django.db import transaction

from scheduling.models import Notification, NotificationArchive, NotificationStatus

# Keys are looked up in chunks: a protocol amendment writes hundreds of thousands.
_CHUNK = 5_000
PURGED_KEY_PREFIX = "sha256:"


def purged_key(key: str) -> str:
    """What the purge leaves of an idempotency key: a hash, still unique and still matched by
    `notifications_write`, that no longer names the visit or the alert it was about."""
    return PURGED_KEY_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def archived_keys(keys: Iterable[str]) -> set[str]:
    """The keys among `keys` that the archive holds, as they were or purged."""
    keys = list(dict.fromkeys(keys))
    found = set()
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        stored_as = {key: key for key in chunk} | {purged_key(key): key for key in chunk}
        found |= {
            stored_as[stored]
            for stored in NotificationArchive.objects.filter(
                idempotency_key__in=list(stored_as)
            ).values_list("idempotency_key", flat=True)
        }
    return found


def notifications_drop_archived(*, keys: Iterable[str]) -> set[str]:
    """Delete outbox rows whose key the archive holds, among `keys`; returns those keys.

    The last step of every write (`notifications_write`, and writers that insert in SQL): a
    row written while an archive batch moved its key away is taken back before it commits.
    """
    taken = archived_keys(keys)
    if taken:
        Notification.objects.filter(idempotency_key__in=taken).delete()
    return taken


def notifications_write(
    rows: list[Notification], *, revive_cancelled: bool = False
) -> list[Notification]:
    """Write these outbox rows, each unless its idempotency key has been used.

    A key already in the outbox is left alone (pending, sending or sent), except that with
    `revive_cancelled` a cancelled row becomes pending again at the new row's time: a visit
    moved back to a time it had gets its reminder back. A key in the archive is never written
    again, whatever became of its message: sent, failed or cancelled, archived is final.
    Runs in the caller's transaction, or its own. Returns the rows written or revived (without
    `revive_cancelled`, also those the outbox's unique index skipped: it does not say which).
    """
    unique: dict[str, Notification] = {}
    for row in rows:
        unique.setdefault(row.idempotency_key, row)
    rows = list(unique.values())
    revived = []
    if revive_cancelled and rows:
        existing = {
            key: (pk, status)
            for key, pk, status in Notification.objects.filter(
                idempotency_key__in=[row.idempotency_key for row in rows]
            ).values_list("idempotency_key", "pk", "status")
        }
        for row in rows:
            pk, status = existing.get(row.idempotency_key, (None, None))
            if status != NotificationStatus.CANCELLED:
                continue
            # The status condition again: the row may have been archived since it was read,
            # and then the insert below and the archive's check settle it.
            if Notification.objects.filter(pk=pk, status=NotificationStatus.CANCELLED).update(
                status=NotificationStatus.PENDING,
                send_after=row.send_after,
                attempts=0,
                last_error="",
            ):
                revived.append(row)
            else:
                del existing[row.idempotency_key]
        rows = [row for row in rows if row.idempotency_key not in existing]
    # One transaction: a row the archive's check takes back must never have been visible to
    # the dispatcher.
    with transaction.atomic():
        if rows:
            # A key another writer holds is skipped by the outbox's unique index.
            Notification.objects.bulk_create(rows, ignore_conflicts=True)
        dropped = notifications_drop_archived(keys=[row.idempotency_key for row in rows])
    return [row for row in rows if row.idempotency_key not in dropped] + revived

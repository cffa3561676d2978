"""The provider's pace: each sending number sends no faster than its provider allows, across
every worker (a token bucket of one in PostgreSQL, so shared wherever the outbox is).

SMS and WhatsApp providers cap messages per second per sender (a long code: 1 a second) and
refuse, or queue for hours, what comes faster. Before each message a worker reserves its
sender's next slot in one statement (the slot is the later of now and the last slot plus one
interval, the virtual scheduling of GCRA) and waits for it; the 08:00 burst after quiet hours
then leaves at the provider's pace, spread over however many workers claim it, and none is
refused. The wait is short (about one interval per worker sending for that number); the batch
renews its claims as it goes (delivery/outbox.py), so a slow pace loses no row.
"""

import datetime as dt
import time
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from delivery.models import SenderPace

# One statement, one round trip: the row is made at the default pace at a number's first
# message; the result is how long to wait for the slot reserved (0 when it is now).
_RESERVE_SQL = """
INSERT INTO delivery_senderpace (sender, per_second, next_slot_at)
VALUES (%(sender)s, %(default)s, clock_timestamp() + make_interval(secs => 1.0 / %(default)s))
ON CONFLICT (sender) DO UPDATE
SET next_slot_at = GREATEST(delivery_senderpace.next_slot_at, clock_timestamp())
    + make_interval(secs => 1.0 / delivery_senderpace.per_second)
RETURNING GREATEST(
    EXTRACT(EPOCH FROM next_slot_at - make_interval(secs => 1.0 / per_second)
        - clock_timestamp()),
    0
)
"""


def sender_slot_reserve(*, sender: str, default_per_second: float | None = None) -> float:
    """Reserve `sender`'s next slot to send in; returns the seconds until it. A sender's first
    message makes its row at `default_per_second` (SMS_SENDER_DEFAULT_PER_SECOND unless
    given): each sender, an SMS number or a WhatsApp sender, keeps its own pace."""
    if default_per_second is None:
        default_per_second = settings.SMS_SENDER_DEFAULT_PER_SECOND
    default = Decimal(str(default_per_second))
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_RESERVE_SQL, {"sender": sender, "default": default})
            return float(cursor.fetchone()[0])
    # SQLite (`make run`, one machine): its write lock keeps the reservations apart.
    with transaction.atomic():
        pace, _ = SenderPace.objects.select_for_update().get_or_create(
            sender=sender, defaults={"per_second": default}
        )
        now = timezone.now()
        slot = max(pace.next_slot_at or now, now)
        pace.next_slot_at = slot + dt.timedelta(seconds=1 / float(pace.per_second))
        pace.save(update_fields=["next_slot_at"])
    return max((slot - now).total_seconds(), 0.0)


def sender_pace(*, sender: str, default_per_second: float | None = None) -> float:
    """Wait for `sender`'s next slot (shared by every worker); returns the seconds waited."""
    wait = sender_slot_reserve(sender=sender, default_per_second=default_per_second)
    if wait > 0:
        time.sleep(wait)
    return wait

"""Time zones named as people read them."""

import datetime as dt

from django.utils import timezone


def zone_words(zone, at: dt.datetime | None = None) -> str:
    """ "Europe/London, GMT now": the zone and its abbreviation at `at` (now by default)."""
    local = timezone.localtime(at or timezone.now(), zone)
    return f"{zone}, {local:%Z} now"

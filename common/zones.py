"""Time zones named as people read them."""

import datetime as dt

from django.utils import timezone


def zone_words(zone, at: dt.datetime | None = None) -> str:
    """ "Europe/London, GMT now": the zone and its abbreviation at `at` (now by default)."""
    local = timezone.localtime(at or timezone.now(), zone)
    return f"{zone}, {local:%Z} now"


def local_words(at: dt.datetime, zone) -> str:
    """A moment as the people at a site read it: "Tue 01 Dec 2026 09:00 GMT"."""
    return f"{timezone.localtime(at, zone):%a %d %b %Y %H:%M %Z}"

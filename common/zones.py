"""Time as people read it: every moment in a zone, and the zone named.

`local_words` is the one way a moment is written for a person, on every page, message and
export meant for reading: in the zone of the site (or, in a patient's message, the patient's),
with its abbreviation. The admin's own date formats (config/formats) write the same shape.
"""

import datetime as dt

from django.utils import timezone


def zone_words(zone, at: dt.datetime | None = None) -> str:
    """ "Europe/London, GMT now": the zone and its abbreviation at `at` (now by default)."""
    local = timezone.localtime(at or timezone.now(), zone)
    return f"{zone}, {local:%Z} now"


def date_words(day: dt.date) -> str:
    """A day as every page writes it: "Mon 7 Dec 2026"."""
    return f"{day:%a} {day.day} {day:%b %Y}"


def local_words(at: dt.datetime, zone=None) -> str:
    """A moment as the people at a site read it: "Tue 1 Dec 2026 09:00 GMT"; in `zone`, or,
    given none, in the zone `at` is already in."""
    local = timezone.localtime(at, zone or at.tzinfo)
    return f"{date_words(local)} {local:%H:%M %Z}"


def time_words(at: dt.datetime, zone) -> str:
    """The time of day of a moment, named: "09:00 GMT"."""
    return f"{timezone.localtime(at, zone):%H:%M %Z}"


def respond_in_zone(zone, respond):
    """`respond()`'s response, with `zone` the current time zone while it is made and while
    it is rendered: an admin page is a TemplateResponse, which would otherwise render after
    the view returned, outside any override, in the default zone."""
    with timezone.override(zone):
        response = respond()
        if callable(getattr(response, "render", None)) and not response.is_rendered:
            response.render()
    return response

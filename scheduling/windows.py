"""Follow-up dates and windows, computed in the site's own calendar."""

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from common.zones import date_words


@dataclass(frozen=True)
class FollowUpSlot:
    scheduled_at: dt.datetime
    window_opens_on: dt.date
    window_closes_on: dt.date


def follow_up_slot(
    *, transplanted_at: dt.datetime, zone: ZoneInfo, weeks_after: int, window_days: int
) -> FollowUpSlot:
    """A follow-up `weeks_after` the transplant at the same local clock time.

    Adding weeks to the local date rather than to the UTC instant keeps a 10:00 transplant's
    follow-ups at 10:00 across a daylight-saving change.
    """
    local = transplanted_at.astimezone(zone)
    due_on = local.date() + dt.timedelta(weeks=weeks_after)
    scheduled_at = dt.datetime.combine(due_on, local.time().replace(tzinfo=None), tzinfo=zone)
    window = dt.timedelta(days=window_days)
    return FollowUpSlot(
        scheduled_at=scheduled_at.astimezone(dt.UTC),
        window_opens_on=due_on - window,
        window_closes_on=due_on + window,
    )


def window_words(visit) -> str:
    """A visit's window as every page writes it, "Mon 7 Dec 2026 – Mon 21 Dec 2026"; a
    procedure's one day once; "" for none."""
    opens, closes = visit.window_opens_on, visit.window_closes_on
    if opens is None:
        return ""
    if opens == closes:
        return date_words(opens)
    return f"{date_words(opens)} – {date_words(closes)}"

"""Pure timing rules for reminders and retries."""

import datetime as dt
from zoneinfo import ZoneInfo

MAX_RETRY_DELAY = dt.timedelta(days=1)


def reminder_time(*, appointment_at: dt.datetime, lead_days: int, zone: ZoneInfo) -> dt.datetime:
    """`lead_days` before the appointment at the same local clock time (DST-safe)."""
    local = appointment_at.astimezone(zone)
    day = local.date() - dt.timedelta(days=lead_days)
    return dt.datetime.combine(day, local.time().replace(tzinfo=None), tzinfo=zone).astimezone(
        dt.UTC
    )


def in_quiet_hours(local_time: dt.time, *, start: dt.time, end: dt.time) -> bool:
    if start <= end:
        return start <= local_time < end
    return local_time >= start or local_time < end  # the quiet hours cross midnight


def after_quiet_hours(
    at: dt.datetime, *, zone: ZoneInfo, start: dt.time, end: dt.time
) -> dt.datetime:
    """`at`, or if that falls in the quiet hours in `zone`, the moment they end."""
    local = at.astimezone(zone)
    if not in_quiet_hours(local.time().replace(tzinfo=None), start=start, end=end):
        return at
    day = local.date()
    if local.time().replace(tzinfo=None) >= end:
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, end, tzinfo=zone).astimezone(dt.UTC)


def retry_delay(*, failed_attempts: int, base_seconds: int) -> dt.timedelta:
    """Exponential backoff: base, 2×base, 4×base, … capped at a day."""
    delay = dt.timedelta(seconds=base_seconds * 2 ** max(failed_attempts - 1, 0))
    return min(delay, MAX_RETRY_DELAY)

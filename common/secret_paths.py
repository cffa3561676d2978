"""Paths that carry a secret, and the log filter that keeps the secrets out of every log.

A reminder's link (`/v/<token>/`), a check-in's (`/q/<token>/`) and a calendar feed's
(`/calendar/<token>.ics`) open a patient's page or a site's calendar to whoever holds them; the
database keeps only their hashes, and no log may keep them either. Django's request logger
writes the path of every 4xx and 5xx ("Forbidden: /v/…/"), gunicorn's access log writes every
path, and an exception's text can quote one: all of them go through `text_without_secrets`.

`SECRET_PATH_PREFIXES` is the one list: a new link that carries a secret adds its first path
segment here (`tests/test_secret_paths.py` fails for a URL with a `token` that is not listed).
"""

import logging
import re

SECRET_PATH_PREFIXES = ("v", "q", "calendar")

# A listed segment, then the secret: everything up to the next slash, query, quote or space
# (a calendar feed's ".ics" is kept, so that a reader still sees which kind of link it was).
_SECRET_IN_TEXT = re.compile(
    r"/(?P<prefix>" + "|".join(map(re.escape, SECRET_PATH_PREFIXES)) + r")/"
    r"(?P<secret>[^/\s?#\"'<>]+?)(?=\.ics\b|[/\s?#\"'<>]|$)"
)
MASK = "…"


def text_without_secrets(text: str) -> str:
    """ "Forbidden: /v/AbC123/" → "Forbidden: /v/…/"; "/calendar/AbC.ics" → "/calendar/….ics";
    any other text as it is."""
    return _SECRET_IN_TEXT.sub(lambda m: f"/{m['prefix']}/{MASK}", text)


class SecretPathFilter(logging.Filter):
    """Masks the secrets of `SECRET_PATH_PREFIXES` in a record's message, and in its traceback.

    It goes on handlers, not on a logger: a logger's own filters do not see the records its
    children pass up (django.request's reach the root's handlers, not the root's filters).
    `config/settings.py` puts it on the root logger's handler and `config/gunicorn_logging.py`
    on gunicorn's.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it as it would have
            return True
        masked = text_without_secrets(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = text_without_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = text_without_secrets(record.stack_info)
        return True

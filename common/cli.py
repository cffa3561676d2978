"""Reading management commands' arguments: refused with a clear error, never passed raw to SQL."""

from django.core.management.base import CommandError


def text_argument(value: str, *, name: str) -> str:
    # PostgreSQL refuses NUL in any string, with an error that names no argument.
    if not value.strip():
        raise CommandError(f"--{name} is empty.")
    if not value.isprintable():
        raise CommandError(f"--{name} {value!r} has control characters in it.")
    return value

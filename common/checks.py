"""`manage.py check --deploy`: what must not reach production."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.checks import Error, Tags, register
from django.db import DatabaseError

from common.passwords import DEMO_PASSWORD


@register(Tags.security, deploy=True)
def no_demo_passwords(app_configs, **kwargs):
    """An active account whose password is the demo's: anyone who read the README can use it."""
    if settings.DEBUG:
        return []
    try:
        users = list(get_user_model().objects.filter(is_active=True).only("username", "password"))
    except DatabaseError:
        return []  # no database yet: nothing to check
    return [
        Error(
            f"The account {user.get_username()!r} has the demo's password.",
            hint="Set a real password, or deactivate the account; never load the demo here.",
            id="tracker.E001",
        )
        for user in users
        if user.check_password(DEMO_PASSWORD)
    ]

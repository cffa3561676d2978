from django.apps import AppConfig


class CommonConfig(AppConfig):
    """Plumbing every app uses and no rule lives in."""

    name = "common"
    verbose_name = "Common"

from django.apps import AppConfig


class CommonConfig(AppConfig):
    """Plumbing every app uses and no rule lives in."""

    name = "common"
    verbose_name = "Common"

    def ready(self):
        from common import checks  # noqa: F401  (registers the deploy checks)

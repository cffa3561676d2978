from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CommonConfig(AppConfig):
    """Plumbing every app uses and no rule lives in."""

    name = "common"
    verbose_name = "Common"

    def ready(self):
        from common import checks  # noqa: F401  (registers the deploy checks)

        post_migrate.connect(_grant_to_app_role)


def _grant_to_app_role(sender, using="default", **kwargs):
    """After a migration run as the owner, the app role gets what any new table needs."""
    from django.conf import settings
    from django.db import connections

    from common.db_roles import app_role_grant, append_only_revoke_everywhere, role_exists

    connection = connections[using]
    role = settings.DATABASE_APP_ROLE
    # Once per run: post_migrate is sent for each app, after all of them have migrated.
    if sender.label != "pathway" or connection.vendor != "postgresql":
        return
    if role and role_exists(connection, role):
        app_role_grant(connection, role)
    # Whatever the setting: no role but the owner may change an append-only table.
    append_only_revoke_everywhere(connection)

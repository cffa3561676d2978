import os

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from common.cli import text_argument
from common.db_roles import roles_create


class Command(BaseCommand):
    help = (
        "Make the database's owner role and the application's role (least privilege). Run "
        "once as a PostgreSQL superuser; passwords come from DB_OWNER_PASSWORD and "
        "DB_APP_PASSWORD, never the command line."
    )

    def add_arguments(self, parser):
        parser.add_argument("--owner", default="tracker_owner")
        parser.add_argument("--app", default="tracker_app")

    def handle(self, *args, owner, app, **options):
        if connection.vendor != "postgresql":
            raise CommandError("Database roles are for PostgreSQL; SQLite has none.")
        passwords = {
            name: os.environ.get(name, "") for name in ("DB_OWNER_PASSWORD", "DB_APP_PASSWORD")
        }
        missing = [name for name, value in passwords.items() if not value]
        if missing:
            raise CommandError(f"Set {' and '.join(missing)} in the environment first.")
        owner, app = text_argument(owner, name="owner"), text_argument(app, name="app")
        if owner == app:
            raise CommandError("The owner and the application need two different roles.")
        roles_create(
            connection,
            owner=owner,
            app=app,
            owner_password=passwords["DB_OWNER_PASSWORD"],
            app_password=passwords["DB_APP_PASSWORD"],
        )
        self.stdout.write(
            f"{owner} owns {connection.settings_dict['NAME']}; {app} may read and write it, "
            "and only read and add to its append-only tables. Migrate as "
            f"{owner} with DATABASE_APP_ROLE={app}; run the application as {app}."
        )

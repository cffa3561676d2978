from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _register_sqlite_functions(sender, connection, **kwargs):
    if connection.vendor == "sqlite":
        from pathway.outcomes import SqliteMedian

        connection.connection.create_aggregate("MEDIAN", 1, SqliteMedian)


class PathwayConfig(AppConfig):
    name = "pathway"
    verbose_name = "Treatment pathway"

    def ready(self):
        connection_created.connect(_register_sqlite_functions)

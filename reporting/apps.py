from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _register_sqlite_functions(sender, connection, **kwargs):
    if connection.vendor == "sqlite":
        from reporting.outcomes import SqliteMedian

        connection.connection.create_aggregate("MEDIAN", 1, SqliteMedian)


class ReportingConfig(AppConfig):
    """Timeline, outcomes, the weekly report, FHIR and the calendar feed: reads, no rules."""

    name = "reporting"
    verbose_name = "Reporting"

    def ready(self):
        connection_created.connect(_register_sqlite_functions)
        from reporting import receivers

        receivers.connect()

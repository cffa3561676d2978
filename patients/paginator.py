from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

# Below this many rows the exact count is cheap and shown.
ESTIMATE_ABOVE = 10_000


class EstimatedCountPaginator(Paginator):
    """An admin paginator that, for an unfiltered list of a big PostgreSQL table, reads the
    planner's row estimate instead of counting every row."""

    @cached_property
    def count(self):
        queryset = self.object_list
        connection = connections[queryset.db]
        if connection.vendor == "postgresql" and not queryset.query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                    [queryset.model._meta.db_table],
                )
                estimate = cursor.fetchone()[0]
            if estimate > ESTIMATE_ABOVE:
                return estimate
        return super().count

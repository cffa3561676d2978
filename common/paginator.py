from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

# Below this many rows (by the planner's estimate) the exact count is cheap and shown.
ESTIMATE_ABOVE = 10_000

# One query whatever the table's size: PostgreSQL runs the count only when the table is small.
_ESTIMATE_OR_COUNT = """
SELECT CASE WHEN c.reltuples > %s THEN c.reltuples::bigint
            ELSE (SELECT count(*) FROM {table}) END
FROM pg_class AS c WHERE c.oid = %s::regclass
"""


class EstimatedCountPaginator(Paginator):
    """An admin paginator that, for an unfiltered list of a big PostgreSQL table, reads the
    planner's row estimate instead of counting every row."""

    @cached_property
    def count(self):
        queryset = self.object_list
        connection = connections[queryset.db]
        if connection.vendor != "postgresql" or queryset.query.where:
            return super().count
        table = queryset.model._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                _ESTIMATE_OR_COUNT.format(table=connection.ops.quote_name(table)),
                [ESTIMATE_ABOVE, table],
            )
            return cursor.fetchone()[0]

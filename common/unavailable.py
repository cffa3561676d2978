"""A database that cannot be reached just now is a 503 with Retry-After, never a 500.

During a failover (README, "Scaling out") the primary is gone for a few seconds, until Patroni
promotes its replica and the next connection finds it; the request in between is told so, in
words, and when to try again. The rule is `database_unavailable`; the middleware applies it to
what views raise, and the 500 handler to what middleware raises (a session read, say).
"""

import logging
import sys

from django import db
from django.http import HttpResponse
from django.views import defaults

logger = logging.getLogger(__name__)

# Seconds a client is asked to wait: a failover takes Patroni's TTL (10 to 30 s) at most.
RETRY_AFTER_SECONDS = 5
# SQLSTATE read_only_sql_transaction: a kept connection reached a server that a switchover
# has since made a replica.
READ_ONLY_TRANSACTION = "25006"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Try again in a moment</title></head>
<body><h1>The tracker cannot reach its database just now</h1>
<p>This usually lasts a few seconds, while a standby database takes over. Try again in
{seconds} seconds.</p>
<p>If you were saving something, look whether it was saved before you do it again.</p>
</body></html>
"""


def database_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database cannot be reached or written now, not that a query
    or a row was wrong: a lost or refused connection, or a server no longer the primary."""
    if isinstance(error, db.OperationalError | db.InterfaceError):
        return True
    cause = error.__cause__
    return isinstance(error, db.InternalError) and (
        getattr(cause, "pgcode", None) == READ_ONLY_TRANSACTION
    )


def database_unavailable_response(request, error: BaseException) -> HttpResponse:
    logger.warning(
        "503 for %s %s: the database is unavailable (%s)",
        request.method,
        request.path,
        str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
    )
    # The connections are not kept for the next request: one may still be open to a server
    # that is no longer the primary (a switchover), and the next connection finds the new one.
    for connection in db.connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()
    response = HttpResponse(
        PAGE.format(seconds=RETRY_AFTER_SECONDS), status=503, content_type="text/html"
    )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


def server_error(request):
    """handler500: Django calls it while handling the exception, so it is in sys.exc_info()."""
    error = sys.exc_info()[1]
    if error is not None and database_unavailable(error):
        return database_unavailable_response(request, error)
    return defaults.server_error(request)

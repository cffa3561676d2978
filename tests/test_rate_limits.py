"""Rate limits count across processes in Redis, and never take a page down with it."""

import datetime as dt
import json
import logging

import pytest
from django.utils import timezone

from common.rate_limits import RateLimit, shared_store_answers
from pathway import services
from pathway.states import CourseState
from scheduling.models import Visit, VisitKind
from scheduling.visit_links import visit_link_issue
from tests.servers import Gunicorn, RedisServer, database_url


def test_the_count_is_shared_through_redis_and_kept_locally_while_it_is_down(settings, caplog):
    limit = RateLimit("test-scope", "3/minute")
    with RedisServer() as redis:
        settings.RATE_LIMIT_STORAGE_URL = redis.url
        assert [limit.allows("203.0.113.9") for _ in range(4)] == [True, True, True, False]
        assert redis.command("KEYS", "*test-scope*") != b"*0\r\n"  # counted in Redis
        assert shared_store_answers() is True
        redis.kill()
        with caplog.at_level(logging.WARNING, logger="common.rate_limits"):
            # Counted here from zero: the limit still holds, per process.
            assert [limit.allows("203.0.113.9") for _ in range(4)] == [True, True, True, False]
        assert shared_store_answers() is False
        warnings = [r.getMessage() for r in caplog.records if r.name == "common.rate_limits"]
        assert len(warnings) == 1 and "counted in this process alone" in warnings[0]
        assert "203.0.113.9" not in warnings[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_with_redis_stopped_under_a_live_server_the_page_answers_and_healthz_says_so(
    course, pathway, tmp_path
):
    pathway.advance(course, CourseState.ELIGIBLE)
    services.course_schedule_harvest(
        course=course,
        by=pathway.coordinator,
        scheduled_at=timezone.now() + dt.timedelta(days=3),
        place="Suite 2",
    )
    token = visit_link_issue(visit=Visit.objects.get(course=course, kind=VisitKind.HARVEST))
    with RedisServer() as redis:
        env = {"DATABASE_URL": database_url(), "REDIS_URL": redis.url}
        with Gunicorn(env, tmp_path) as web:
            before = web.request("GET", f"/v/{token}/")
            redis.kill()
            during = [web.request("GET", f"/v/{token}/") for _ in range(3)]
            status, _headers, body = web.request("GET", "/healthz")
            written = web.output()
    assert before[0] == 200
    assert [answer[0] for answer in during] == [200, 200, 200]
    assert course.patient.first_name in during[-1][2].decode()
    health = json.loads(body)
    assert status == 503 and health["checks"]["cache"] == {
        "ok": False,
        "detail": "unreachable: rate limits counted in each process alone",
    }
    assert "Rate limits are counted in this process alone" in written
    assert "Internal Server Error" not in written and "Traceback" not in written

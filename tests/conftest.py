import datetime as dt
from decimal import Decimal
from unittest import mock

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from pathway import services
from pathway.coi import coi_id_format
from pathway.custody import batch_record_qc, custody_event_record
from pathway.models import CustodyKind, Protocol
from pathway.states import CourseState
from tests.factories import (
    PASSWORD,
    BodyMeasurementFactory,
    ChestCTFactory,
    ClinicalAssessmentFactory,
    LungFunctionTestFactory,
    PatientFactory,
    UserFactory,
)


@pytest.fixture(scope="session")
def django_db_createdb(request, django_db_blocker) -> bool:
    """Build the test database anew with --create-db, and also when a kept one (`make test`
    reuses it) was emptied by the last run's transactional tests: the rows the data
    migrations made (roles, the default protocol, beat's schedule) would be missing."""
    if request.config.getvalue("create_db"):
        return True
    with django_db_blocker.unblock():
        return not _kept_database_is_whole()


def _kept_database_is_whole() -> bool:
    """Whether the kept PostgreSQL test database has the default protocol (SQLite's test
    database lives in memory and is always new)."""
    if connection.vendor != "postgresql":
        return False
    params = connection.get_connection_params() | {
        "dbname": connection.creation._get_test_db_name()
    }
    driver_error = connection.Database.Error
    try:
        raw = connection.get_new_connection(params)
    except driver_error:
        return False  # not made yet
    try:
        with raw.cursor() as cursor:
            cursor.execute("SELECT EXISTS (SELECT 1 FROM pathway_protocol)")
            return bool(cursor.fetchone()[0])
    except driver_error:
        return False
    finally:
        raw.close()


# On PostgreSQL the tests run as the application does in production: as a role that owns
# nothing (common/db_roles.py). The test database is made and migrated by the role in
# DATABASE_URL (the owner); then every connection, the live server's and the workers' too,
# uses this one.
APP_ROLE = "tracker_test_app"
OWNER = {}


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    if connection.vendor != "postgresql":
        yield
        return
    with django_db_blocker.unblock():
        from common.db_roles import app_role_grant, role_exists

        verb = "ALTER" if role_exists(connection, APP_ROLE) else "CREATE"
        with connection.cursor() as cursor:
            cursor.execute(f"{verb} ROLE {APP_ROLE} WITH LOGIN NOSUPERUSER PASSWORD 'test-app'")
            name = connection.ops.quote_name(connection.settings_dict["NAME"])
            cursor.execute(f"GRANT CONNECT ON DATABASE {name} TO {APP_ROLE}")
        app_role_grant(connection, APP_ROLE)
        OWNER.update(
            USER=connection.settings_dict["USER"], PASSWORD=connection.settings_dict["PASSWORD"]
        )
        connection.close()
        connection.settings_dict.update(USER=APP_ROLE, PASSWORD="test-app")
    yield
    connection.close()
    connection.settings_dict.update(OWNER)  # the owner drops the test database
    OWNER.clear()


def owner_connection():
    """A raw connection to the test database as its owner, for what the app role may not do
    (flush it between tests, lift a trigger in a test of the hash chain)."""
    params = connection.get_connection_params() | {
        "user": OWNER.get("USER") or connection.settings_dict["USER"],
        "password": OWNER.get("PASSWORD") or connection.settings_dict["PASSWORD"],
    }
    return connection.get_new_connection(params)


@pytest.fixture(autouse=True, scope="session")
def _flush_as_the_owner():
    """Between transactional tests Django empties every table with TRUNCATE, which the app
    role may not do and the audit tables' triggers refuse. The owner does it, as a replica
    would, with the triggers asleep, for that one transaction only."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    def execute_sql_flush(self, sql_list):
        raw = owner_connection()
        try:
            with raw.cursor() as cursor:
                cursor.execute("SET LOCAL session_replication_role = replica")
                for sql in sql_list:
                    cursor.execute(sql)
            raw.commit()
        finally:
            raw.close()

    with mock.patch.object(DatabaseOperations, "execute_sql_flush", execute_sql_flush):
        yield


@pytest.fixture
def coordinator(db):
    return UserFactory(username="coordinator", role="coordinator")


@pytest.fixture
def clinician(db):
    return UserFactory(username="clinician", role="clinician")


@pytest.fixture
def clinician2(db):
    """A second clinician: the one who confirms the bedside check."""
    return UserFactory(username="clinician2", role="clinician")


@pytest.fixture
def lab(db):
    return UserFactory(username="lab", role="lab")


@pytest.fixture
def lab2(db):
    """A second lab user: the one who signs releases of QC the first entered."""
    return UserFactory(username="lab2", role="lab")


@pytest.fixture
def protocol(db):
    return Protocol.objects.get(is_default=True)


@pytest.fixture
def eligible_patient(db):
    """A patient whose latest records pass every eligibility rule."""
    patient = PatientFactory()
    LungFunctionTestFactory(patient=patient)
    ChestCTFactory(patient=patient)
    ClinicalAssessmentFactory(patient=patient)
    BodyMeasurementFactory(patient=patient)
    return patient


@pytest.fixture
def course(eligible_patient, coordinator):
    return services.course_create(patient=eligible_patient, by=coordinator)


class Pathway:
    """Drives a course along the happy path, one step at a time, with the clock moved.

    The path starts 40 days ago, so the transplant lands a week before the real now.
    """

    def __init__(self, coordinator, clinician, lab, lab2, clinician2, start=None):
        self.coordinator, self.clinician, self.lab, self.lab2 = coordinator, clinician, lab, lab2
        self.clinician2 = clinician2
        self.start = start or timezone.now().replace(microsecond=0) - dt.timedelta(days=40)

    def starting(self, start):
        """The same people, on a path that starts at `start`."""
        return Pathway(
            self.coordinator, self.clinician, self.lab, self.lab2, self.clinician2, start=start
        )

    def at(self, days: float) -> dt.datetime:
        return self.start + dt.timedelta(days=days)

    def on_expansion_day(self, course, day: int) -> dt.datetime:
        """Noon in the site's calendar on expansion day `day` (the day of receipt, `at(2.9)`,
        is day 0). `at(2.9 + day)` falls a calendar day short when the clocks go back in
        between and the receipt fell in the hour after midnight, as it does when the suite
        runs just before 02:00 UTC in late November."""
        zone = course.site.time_zone
        received_on = timezone.localdate(self.at(2.9), zone)
        return dt.datetime.combine(received_on + dt.timedelta(days=day), dt.time(12), tzinfo=zone)

    def steps(self, course):
        at = self.at
        return [
            (CourseState.EVALUATION, 0, lambda: self.evaluate(course)),
            (
                CourseState.ELIGIBLE,
                0.1,
                lambda: services.course_approve(course=course, by=self.clinician),
            ),
            (
                CourseState.HARVEST_SCHEDULED,
                0.2,
                lambda: services.course_schedule_harvest(
                    course=course, by=self.coordinator, scheduled_at=at(2), place="Endoscopy 2"
                ),
            ),
            (
                CourseState.HARVESTED,
                2.1,
                lambda: services.course_record_harvest(
                    course=course, by=self.clinician, performed_at=at(2), operator=self.clinician
                ),
            ),
            (
                CourseState.EXPANDING,
                3,
                lambda: services.course_receive_at_lab(
                    course=course,
                    scanned_coi_id=course.coi_id,
                    by=self.lab,
                    received_at=at(2.9),
                    temperature_c=Decimal("4.5"),
                    transit_hours=Decimal("20"),
                ),
            ),
            (
                CourseState.RELEASED,
                31,
                lambda: self.release(course),
            ),
            (
                CourseState.TRANSPLANT_SCHEDULED,
                31.1,
                lambda: services.course_schedule_transplant(
                    course=course, by=self.coordinator, scheduled_at=at(33), place="Endoscopy 1"
                ),
            ),
            (
                CourseState.FOLLOW_UP,
                33.1,
                lambda: self.transplant(course),
            ),
        ]

    def record_qc(self, course, **overrides):
        """The first lab user enters the batch's QC results (by default, all in spec)."""
        values = {
            "identity_p63_pct": Decimal("92"),
            "purity_pct": Decimal("95"),
            "sterility_negative": True,
            "viability_pct": Decimal("88"),
            "viable_cells": 400_000_000,  # enough for the highest dose at 70 kg
        } | overrides
        return batch_record_qc(batch=course.batches.get(status="expanding"), by=self.lab, **values)

    def release(self, course):
        """QC entered by one lab user, the release signed by another."""
        self.record_qc(course)
        return services.course_release(course=course, by=self.lab2, password=PASSWORD)

    def deliver_to_site(self, course):
        """The product leaves the lab and arrives at the site, its label scanned each time."""
        for kind, day in (
            (CustodyKind.SHIPPED_TO_SITE, 31.5),
            (CustodyKind.RECEIVED_AT_SITE, 31.8),
        ):
            if not course.custody_events.filter(kind=kind).exists():
                custody_event_record(
                    course=course,
                    kind=kind,
                    by=self.coordinator,
                    scanned_coi_id=course.coi_id,
                    at=self.at(day),
                    location=course.site.name,
                )

    def transplant(self, course, **overrides):
        """The bedside check, confirmed by a second clinician of the course's site."""
        self.deliver_to_site(course)
        course.site.members.add(self.clinician2)
        values = {
            "performed_at": self.at(33),
            "bedside_coi_id": course.coi_id,
            "cells_administered": 140_000_000,
            "weight_kg": Decimal(70),
            "weighed_on": self.at(33).date(),
            "second_person": self.clinician2,
            "second_person_password": PASSWORD,
        } | overrides
        return services.course_record_transplant(course=course, by=self.clinician, **values)

    def evaluate(self, course):
        services.course_start_evaluation(course=course, by=self.coordinator)
        BodyMeasurementFactory(
            patient=course.patient, taken_on=timezone.localdate(timezone=course.site.time_zone)
        )

    def advance(self, course, to):
        """Take `course` along the happy path until it is in state `to`."""
        steps = self.steps(course)
        path = [CourseState.REFERRED, *(state for state, _, _ in steps)]
        for state, day, step in steps[path.index(course.state) :]:
            if course.state == to:
                return course
            with time_machine.travel(self.at(day), tick=False):
                step()
            assert course.state == state
        assert course.state == to, f"{to} is not on the happy path"
        return course


@pytest.fixture
def pathway(coordinator, clinician, lab, lab2, clinician2):
    return Pathway(coordinator, clinician, lab, lab2, clinician2)


@pytest.fixture
def expected_coi(course):
    def expected(year=None):
        year = year or timezone.localdate().year
        return coi_id_format(site_code=course.site.code, year=year, number=course.pk)

    return expected


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _postgres_only(request):
    """Tests of row locks and concurrent connections mean nothing on SQLite."""
    if request.node.get_closest_marker("postgres"):
        from django.db import connection

        if connection.vendor != "postgresql":
            pytest.skip("needs PostgreSQL: set DATABASE_URL (CI does)")


@pytest.fixture(autouse=True)
def fresh_rate_limits(settings):
    """Every test counts rate limits of its own, in this process from zero: the shared Redis
    holds Celery's queues and would carry one test's requests into the next's limit. A test of
    the shared count sets RATE_LIMIT_STORAGE_URL itself."""
    from common.rate_limits import rate_limits_reset

    settings.RATE_LIMIT_STORAGE_URL = ""
    rate_limits_reset()
    yield
    rate_limits_reset()

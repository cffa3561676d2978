import datetime as dt
from decimal import Decimal
from unittest import mock

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from pathway import services
from pathway.coi import coi_id_format
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
from tests.support import Pathway


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


@pytest.fixture(scope="session")
def drill_template(django_db_setup):
    """A database on the machine's PostgreSQL, migrated once per run, for the drills that run
    servers of their own (tests/clusters.py): copying it takes seconds, migrating 20."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL (CI does)")
    from tests.clusters import manage, psql

    user = OWNER.get("USER") or connection.settings_dict["USER"]
    port = int(connection.settings_dict["PORT"] or 5432)
    name = f"{connection.settings_dict['NAME']}_drill_template"
    psql(port, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', user=user)
    psql(port, f'CREATE DATABASE "{name}"', user=user)
    url = f"postgres://{user}@127.0.0.1:{port}/{name}"
    migrated = manage("migrate", "--noinput", env={"DATABASE_URL": url})
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    yield {"port": port, "name": name, "user": user}
    psql(port, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', user=user)


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


MSC_PROTOCOL = "MSC infusion, standard"

# Vital signs in the expected ranges, at each moment of an infusion.
VITALS = {
    "heart_rate_bpm": 78,
    "systolic_mmhg": 128,
    "diastolic_mmhg": 76,
    "spo2_pct": 94,
    "temperature_c": Decimal("36.8"),
    "respiratory_rate": 16,
}


def vital_signs(**changes) -> dict:
    """The vital signs before, during and an hour after, as the service takes them; a change
    like `after_heart_rate_bpm=130` sets one."""
    signs = {timepoint: dict(VITALS) for timepoint in ("before", "during", "after")}
    for key, value in changes.items():
        timepoint, name = key.split("_", 1)
        signs[timepoint][name] = value
    return signs


class MscPathway:
    """Drives an MSC course along its happy path, with the clock moved: a lot in the site's
    stock, allocation, a booking, the units' journey to the site, the infusion; each dose
    `dose_interval_days` after the one before. The path starts 40 days ago."""

    def __init__(self, pathway, start=None):
        self.base = pathway
        self.coordinator, self.clinician = pathway.coordinator, pathway.clinician
        self.lab, self.lab2, self.clinician2 = pathway.lab, pathway.lab2, pathway.clinician2
        self.start = start or timezone.now().replace(microsecond=0) - dt.timedelta(days=40)

    def starting(self, start):
        return MscPathway(self.base, start=start)

    def at(self, days: float) -> dt.datetime:
        return self.start + dt.timedelta(days=days)

    @staticmethod
    def protocol(**changes):
        """The MSC protocol, with SPEC's Therapy 2 defaults (made on first use)."""
        protocol = Protocol.objects.filter(name=MSC_PROTOCOL).first() or services.protocol_create(
            name=MSC_PROTOCOL, therapy="msc"
        )
        for name, value in changes.items():
            setattr(protocol, name, value)
        protocol.save()
        return protocol

    def lot(self, site, *, units=6, cells_per_unit=100_000_000, number="L1", **changes):
        """A lot received long before the path starts, its QC in spec, released."""
        from pathway.lots import lot_receive, lot_record_qc, lot_release

        with time_machine.travel(self.start - dt.timedelta(days=10), tick=False):
            lot = lot_receive(
                by=self.lab,
                lot_number=number,
                protocol=self.protocol(),
                site=site,
                bank="Example Cord Bank",
                tissue_source="umbilical_cord",
                donor_code="D-0042",
                donor_eligibility_accepted_by="Dr A. Bank, medical director",
                donor_eligibility_accepted_on=(self.start - dt.timedelta(days=60)).date(),
                passage=4,
                units_received=units,
                cells_per_unit=cells_per_unit,
                expires_on=(self.start + dt.timedelta(days=400)).date(),
                storage_temperature_c=Decimal("-180"),
                received_at=timezone.now(),
                **changes,
            )
            lot_record_qc(lot=lot, by=self.lab, **LOT_QC)
            return lot_release(lot=lot, by=self.lab2, password=PASSWORD)

    def patient(self, site, **patient):
        found = PatientFactory(site=site, **patient)
        LungFunctionTestFactory(patient=found)
        ClinicalAssessmentFactory(patient=found, fit_for_infusion=True)
        BodyMeasurementFactory(patient=found)
        return found

    def course(self, site, **patient):
        with time_machine.travel(self.start - dt.timedelta(days=1), tick=False):
            return services.course_create(
                patient=self.patient(site, **patient),
                by=self.coordinator,
                protocol=self.protocol(),
            )

    def dose_day(self, course, dose: int) -> float:
        return 2 + course.protocol.dose_interval_days * (dose - 1)

    def deliver_units(self, course, day: float):
        """The dose's units leave the stock and arrive at the site, each label scanned."""
        from pathway.custody import units_custody_record, units_on_their_way

        for kind, before in (
            (CustodyKind.SHIPPED_TO_SITE, 0.5),
            (CustodyKind.RECEIVED_AT_SITE, 0.2),
        ):
            with time_machine.travel(self.at(day - before), tick=False):
                units_custody_record(
                    course=course,
                    kind=kind,
                    by=self.coordinator,
                    scanned_unit_ids=[
                        u.unit_id for u in units_on_their_way(course=course, kind=kind)
                    ],
                    at=timezone.now(),
                    location=course.site.name,
                )

    def infuse(self, course, **overrides):
        """The bedside: every unit's label and the patient's id scanned, thawed 30 minutes
        before the start, vital signs taken, a second clinician confirming."""
        infusion = services.course_next_infusion(course)
        started = overrides.pop("started_at", None) or timezone.now() - dt.timedelta(hours=1)
        course.site.members.add(self.clinician2)
        values = {
            "thawed_at": started - dt.timedelta(minutes=30),
            "started_at": started,
            "scanned_unit_ids": [u.unit_id for u in infusion.units.all()],
            "scanned_coi_id": course.coi_id,
            "cells_given": 70_000_000,
            "weight_kg": Decimal(70),
            "weighed_on": timezone.localdate(started, course.site.time_zone),
            "second_person": self.clinician2,
            "second_person_password": PASSWORD,
            "vital_signs": vital_signs(),
        } | overrides
        return services.course_record_infusion(course=course, by=self.clinician, **values)

    def schedule(self, course, day: float):
        return services.course_schedule_infusion(
            course=course, by=self.coordinator, scheduled_at=self.at(day), place="Day unit"
        )

    def advance(self, course, to):
        """Take `course` along its happy path until it is in state `to`; with several doses,
        `to` is reached at the first dose that gets there (INFUSED: after the first)."""
        while course.state != to:
            state = course.state
            if state == CourseState.REFERRED:
                with time_machine.travel(self.at(0), tick=False):
                    services.course_start_evaluation(course=course, by=self.coordinator)
                    BodyMeasurementFactory(
                        patient=course.patient,
                        taken_on=timezone.localdate(timezone=course.site.time_zone),
                    )
            elif state == CourseState.EVALUATION:
                with time_machine.travel(self.at(0.1), tick=False):
                    services.course_approve(course=course, by=self.clinician)
            elif state == CourseState.ELIGIBLE:
                with time_machine.travel(self.at(0.2), tick=False):
                    services.course_allocate_product(course=course, by=self.coordinator)
            elif state in (CourseState.PRODUCT_ALLOCATED, CourseState.INFUSED):
                day = self.dose_day(course, course.doses_given + 1)
                with time_machine.travel(self.at(max(day - 1.7, 0.3)), tick=False):
                    self.schedule(course, day)
            elif state == CourseState.INFUSION_SCHEDULED:
                day = self.dose_day(course, course.doses_given + 1)
                self.deliver_units(course, day)
                with time_machine.travel(self.at(day) + dt.timedelta(hours=2), tick=False):
                    self.infuse(course)
            else:
                raise AssertionError(f"{to} is not on the MSC happy path from {state}")
            assert course.state != state, state
        return course


LOT_QC = {
    "viability_pct": Decimal("91"),
    "sterility_negative": True,
    "mycoplasma_negative": True,
    "endotoxin_eu_ml": Decimal("0.10"),
    "cd73_pct": Decimal("99.1"),
    "cd90_pct": Decimal("98.7"),
    "cd105_pct": Decimal("97.5"),
    "cd45_pct": Decimal("0.4"),
    "cd34_pct": Decimal("0.3"),
    "cd14_cd11b_pct": Decimal("0.6"),
    "cd79a_cd19_pct": Decimal("0.2"),
    "hla_dr_pct": Decimal("0.5"),
}


@pytest.fixture
def msc(pathway):
    return MscPathway(pathway)


@pytest.fixture
def msc_site(db, coordinator):
    """A site giving MSC infusions, in its own zone; the coordinator hears of its alerts."""
    from tests.factories import SiteFactory

    site = SiteFactory(code="MAD", name="Madrid Infusion Unit", time_zone="Europe/Madrid")
    site.coordinators.add(coordinator)
    return site

"""Helpers more than one test module uses, other than servers (those are in servers.py)."""

import datetime as dt
import threading
from decimal import Decimal

import time_machine
from django.db import connection
from django.forms.models import model_to_dict
from django.utils import timezone
from django_fsm import ConcurrentTransition

from pathway import services
from pathway.custody import batch_record_qc, custody_event_record
from pathway.models import CustodyKind, TransitionLog, TreatmentCourse
from pathway.states import CourseState
from scheduling.models import Resource, ResourceKind, ResourceSession, Visit
from tests.factories import PASSWORD, BodyMeasurementFactory


def run_together(jobs):
    """Run each (course id, attempt) in its own thread and connection, all starting together.

    Returns per job "won", "lost" (ConcurrentTransition) or the unexpected error."""
    barrier = threading.Barrier(len(jobs))
    outcomes = [None] * len(jobs)

    def run(index, course_id, attempt):
        try:
            course = TreatmentCourse.objects.select_related("patient", "site", "protocol").get(
                pk=course_id
            )
            barrier.wait(timeout=10)
            attempt(course)
            outcomes[index] = "won"
        except ConcurrentTransition:
            outcomes[index] = "lost"
        except Exception as error:  # reported below, so a surprise fails the test
            outcomes[index] = repr(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def snapshot(course):
    """Everything stored about a course, its log and its visits, fresh from the database."""
    fresh = TreatmentCourse.objects.get(pk=course.pk)
    return (
        model_to_dict(fresh) | {"state": fresh.state, "state_changed_at": fresh.state_changed_at},
        list(TransitionLog.objects.filter(course=course).values_list("id", flat=True)),
        list(Visit.objects.filter(course=course).values_list("id", "status")),
    )


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


def chair_for(site, *, capacity: int = 1) -> Resource:
    """The site's infusion chairs, every day 08:00–16:00 in four two-hour slots."""
    chair = Resource.objects.create(
        name=f"{site.code} Infusion chairs",
        kind=ResourceKind.INFUSION_CHAIR,
        site=site,
        time_zone=site.time_zone,
    )
    for weekday in range(7):
        for hour in (8, 10, 12, 14):
            ResourceSession.objects.create(
                resource=chair,
                weekday=weekday,
                starts_at=dt.time(hour),
                ends_at=dt.time(hour + 2),
                capacity=capacity,
            )
    return chair

"""Chain of identity and custody, cold chain, QC and a signed release, the bedside checks."""

import datetime as dt
import math
import re
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from pathway import services
from pathway.coi import coi_id_format
from pathway.custody import batch_record_cell_count, custody_event_record
from pathway.models import AppendOnlyError, Batch, CustodyEvent, CustodyKind
from pathway.services import SIGNATURE_NOT_ACCEPTED, TransitionRefused
from pathway.signatures import bedside_confirmers
from pathway.states import CourseState
from scheduling.models import Alert, ProtocolDeviation
from tests.factories import PASSWORD, SiteFactory, UserFactory
from tests.support import snapshot

pytestmark = pytest.mark.django_db
S = CourseState


# The batch page's cell-count rows, none typed.
NO_COUNTS = {"cell_counts-TOTAL_FORMS": "0", "cell_counts-INITIAL_FORMS": "0"}


def release_on_day(pathway, course, day, *, by=None, password=PASSWORD, **qc):
    """QC by the first lab user, then the release signed on expansion day `day`."""
    released_at = pathway.on_expansion_day(course, day)
    with time_machine.travel(released_at - dt.timedelta(hours=2), tick=False):
        pathway.record_qc(course, **qc)
    with time_machine.travel(released_at, tick=False):
        return services.course_release(course=course, by=by or pathway.lab2, password=password)


def test_the_happy_path_leaves_a_full_chain_of_custody(course, pathway):
    pathway.advance(course, S.FOLLOW_UP)
    kinds = list(course.custody_events.values_list("kind", flat=True))
    assert kinds == [
        CustodyKind.COLLECTED,
        CustodyKind.RECEIVED_AT_LAB,
        CustodyKind.EXPANSION_STARTED,
        CustodyKind.QC_RECORDED,
        CustodyKind.RELEASED,
        CustodyKind.SHIPPED_TO_SITE,
        CustodyKind.RECEIVED_AT_SITE,
        CustodyKind.ADMINISTERED,
    ]
    assert set(course.custody_events.values_list("coi_id", flat=True)) == {course.coi_id}
    batch = Batch.objects.get(course=course)
    assert (batch.status, batch.released_by, batch.qc_recorded_by) == (
        "released",
        pathway.lab2,
        pathway.lab,
    )
    assert batch.release_meaning.startswith("I release this product for clinical use")


@pytest.mark.parametrize(
    "qc, reason",
    [
        (
            {"viability_pct": Decimal("69.9")},
            "Viability is 69.9 %; the protocol needs at least 70 %.",
        ),
        ({"sterility_negative": False}, "Sterility is not negative."),
        (
            {"viable_cells": 48_999_999},
            "cannot make the minimum dose of 0.7 × 10⁶/kg for 70 kg (49.0 × 10⁶ cells)",
        ),
    ],
)
def test_release_refused_for_each_out_of_spec_result(course, pathway, qc, reason):
    pathway.advance(course, S.EXPANDING)
    before = snapshot(course)
    with pytest.raises(TransitionRefused) as refused:
        release_on_day(pathway, course, 28, **qc)
    assert any(reason in r for r in refused.value.reasons), refused.value.reasons
    assert snapshot(course)[0] == before[0] and course.state == S.EXPANDING


def test_identity_purity_and_extra_tests_are_held_to_the_protocol(course, pathway):
    protocol = course.protocol
    assert (protocol.min_identity_p63_pct, protocol.min_purity_pct) == (Decimal(80), Decimal(90))
    protocol.qc_tests.create(name="Mycoplasma")
    pathway.advance(course, S.EXPANDING)
    with pytest.raises(TransitionRefused) as refused:
        release_on_day(
            pathway, course, 28, identity_p63_pct=Decimal("79.9"), purity_pct=Decimal("89.9")
        )
    assert set(refused.value.reasons) == {
        "Identity: 79.9 % P63+ cells; the protocol needs at least 80 %.",
        "Purity is 89.9 %; the protocol needs at least 90 %.",
        "Mycoplasma: not recorded as passed.",
    }
    release_on_day(pathway, course, 28, extra_qc_results={"Mycoplasma": True})
    assert course.state == S.RELEASED


@pytest.mark.parametrize("day, allowed", [(20, False), (21, True), (35, True), (36, False)])
def test_release_only_on_expansion_days_21_to_35(course, pathway, day, allowed):
    pathway.advance(course, S.EXPANDING)
    if allowed:
        release_on_day(pathway, course, day)
        assert course.state == S.RELEASED
    else:
        with pytest.raises(
            TransitionRefused, match=f"Expansion is on day {day}; release is allowed on days 21–35."
        ):
            release_on_day(pathway, course, day)


def test_the_user_who_entered_qc_cannot_sign_the_release(course, pathway):
    pathway.advance(course, S.EXPANDING)
    with pytest.raises(TransitionRefused, match="a second lab user must sign the release"):
        release_on_day(pathway, course, 28, by=pathway.lab)
    assert course.state == S.EXPANDING


def test_a_release_signed_with_a_wrong_password_is_refused(course, pathway):
    pathway.advance(course, S.EXPANDING)
    with pytest.raises(TransitionRefused, match="The password was not accepted"):
        release_on_day(pathway, course, 28, password="not my password")
    assert Batch.objects.get(course=course).status == "expanding"


def test_release_needs_qc_first(course, pathway):
    pathway.advance(course, S.EXPANDING)
    with pytest.raises(TransitionRefused, match="QC results are not recorded"):
        services.course_release(course=course, by=pathway.lab2, password=PASSWORD)


@pytest.mark.parametrize("temperature, hours", [("1.9", "20"), ("8.1", "20"), ("5", "48.1")])
def test_a_broken_cold_chain_rejects_the_batch_and_alerts(course, pathway, temperature, hours):
    pathway.advance(course, S.HARVESTED)
    services.course_receive_at_lab(
        course=course,
        scanned_coi_id=course.coi_id,
        by=pathway.lab,
        received_at=pathway.at(2.9),
        temperature_c=Decimal(temperature),
        transit_hours=Decimal(hours),
    )
    assert course.state == S.ELIGIBLE
    assert Batch.objects.get(course=course).status == "rejected"
    [alert] = Alert.objects.filter(kind="cold_chain_broken")
    assert alert.severity == "urgent" and "A re-harvest is needed." in alert.message
    assert list(course.custody_events.values_list("kind", flat=True))[-2:] == [
        CustodyKind.REJECTED,
        CustodyKind.DISCARDED,
    ]


def test_a_re_harvest_starts_a_new_batch_under_the_same_coi_id(course, pathway):
    pathway.advance(course, S.EXPANDING)
    services.course_fail_qc(course=course, by=pathway.lab, reason="Mycoplasma positive")
    first_coi = course.coi_id
    later = pathway.starting(pathway.start + dt.timedelta(days=5))
    later.advance(course, S.RELEASED)
    assert course.coi_id == first_coi
    assert list(
        Batch.objects.filter(course=course).order_by("received_at").values_list("status", flat=True)
    ) == [
        "failed_qc",
        "released",
    ]


# The bedside.


def transplant(pathway, course, **overrides):
    with time_machine.travel(pathway.at(33.1), tick=False):
        return pathway.transplant(course, **overrides)


@pytest.mark.parametrize(
    "cells, allowed",
    [(48_300_000, False), (49_000_000, True), (364_000_000, True), (364_700_000, False)],
    ids=["0.69", "0.70", "5.20", "5.21"],
)
def test_dose_per_kg_at_its_boundaries(course, pathway, cells, allowed):
    pathway.advance(course, S.TRANSPLANT_SCHEDULED)
    before = snapshot(course)
    if allowed:
        transplant(pathway, course, cells_administered=cells)
        assert course.state == S.FOLLOW_UP
    else:
        with pytest.raises(
            TransitionRefused, match=re.escape("the protocol allows 0.7–5.2 × 10⁶/kg")
        ):
            transplant(pathway, course, cells_administered=cells)
        assert snapshot(course) == before


def test_the_weight_used_sets_the_dose(course, pathway):
    pathway.advance(course, S.TRANSPLANT_SCHEDULED)
    # 60 × 10⁶ cells is 0.6 × 10⁶/kg at 100 kg: too little, though enough at 70 kg.
    with pytest.raises(TransitionRefused, match="for 100 kg"):
        transplant(pathway, course, cells_administered=60_000_000, weight_kg=Decimal(100))


@pytest.mark.parametrize("days_before, allowed", [(30, True), (31, False)])
def test_the_dosing_weight_must_be_recent(course, pathway, days_before, allowed):
    pathway.advance(course, S.TRANSPLANT_SCHEDULED)
    weighed_on = pathway.at(33).date() - dt.timedelta(days=days_before)
    if allowed:
        transplant(pathway, course, weighed_on=weighed_on)
        assert course.patient.bodymeasurements.filter(taken_on=weighed_on).exists()
    else:
        with pytest.raises(TransitionRefused, match="taken 31 days before the transplant"):
            transplant(pathway, course, weighed_on=weighed_on)


def test_a_mismatched_bedside_coi_id_blocks_the_transplant_and_alerts_once(course, pathway):
    pathway.advance(course, S.TRANSPLANT_SCHEDULED)
    before = snapshot(course)
    with pytest.raises(TransitionRefused, match="does not match this patient's"):
        transplant(pathway, course, bedside_coi_id="ZZZ26-999999-A")
    assert snapshot(course) == before
    with pytest.raises(TransitionRefused):
        transplant(pathway, course, bedside_coi_id="zzz26 999999 a")
    [alert] = Alert.objects.all()
    assert (alert.kind, alert.severity) == ("coi_mismatch", "urgent")
    assert "ZZZ26-999999-A" in alert.message and course.coi_id in alert.message


@pytest.mark.parametrize(
    "who, password, reason",
    [
        ("clinician", PASSWORD, "must be someone else"),
        ("clinician2", "wrong", "confirmation was not accepted"),
    ],
)
def test_a_second_person_must_confirm(course, pathway, who, password, reason):
    pathway.advance(course, S.TRANSPLANT_SCHEDULED)
    with pytest.raises(TransitionRefused, match=reason):
        transplant(
            pathway, course, second_person=getattr(pathway, who), second_person_password=password
        )
    assert course.state == S.TRANSPLANT_SCHEDULED


def _second_person(kind, course):
    """A would-be second person at the bedside, of each kind the rule must refuse."""
    other_site = SiteFactory(code="OTH")
    made = {
        "auditor": lambda: UserFactory(username="auditor", role="auditor"),
        "programme lead": lambda: UserFactory(username="lead", role="programme lead"),
        "lab": lambda: UserFactory(username="lab3", role="lab"),
        "coordinator": lambda: UserFactory(username="coord2", role="coordinator"),
        "superuser": lambda: UserFactory(username="root", is_superuser=True),
        "clinician of another site": lambda: UserFactory(
            username="elsewhere", role="clinician", sites=[other_site]
        ),
        "inactive clinician": lambda: UserFactory(
            username="gone", role="clinician", is_active=False
        ),
    }[kind]()
    if kind != "clinician of another site":
        course.site.members.add(made)
    return made


@pytest.mark.parametrize(
    "kind",
    [
        "auditor",
        "programme lead",
        "lab",
        "coordinator",
        "superuser",
        "clinician of another site",
        "inactive clinician",
    ],
)
def test_only_a_clinician_of_the_site_may_be_the_second_person(course, pathway, kind):
    pathway.advance(course, S.TRANSPLANT_SCHEDULED)
    person = _second_person(kind, course)
    with pytest.raises(TransitionRefused, match="may not confirm an administration"):
        transplant(pathway, course, second_person=person)
    assert course.state == S.TRANSPLANT_SCHEDULED
    assert person not in bedside_confirmers(course=course, recorder=pathway.clinician)


def test_the_form_offers_only_the_sites_clinicians_other_than_the_recorder(client, course, pathway):
    pathway.advance(course, S.TRANSPLANT_SCHEDULED)
    course.site.members.add(pathway.clinician2)
    for kind in ("auditor", "superuser", "lab", "clinician of another site"):
        _second_person(kind, course)
    client.force_login(pathway.clinician)
    url = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "record_transplant"])
    form = client.get(url).context["transition_form"]
    assert list(form.fields["second_person"].queryset) == [pathway.clinician2]


def said_on(response) -> list[str]:
    """What a transition page tells: its messages, and the errors beside its fields."""
    form = response.context["transition_form"]
    return [str(m) for m in response.context["messages"]] + [
        error for errors in form.errors.values() for error in errors
    ]


def test_the_sixth_wrong_second_person_password_locks_them_out_like_a_failed_login(
    client, course, pathway, settings
):
    settings.AXES_FAILURE_LIMIT = 5
    pathway.advance(course, S.TRANSPLANT_SCHEDULED)
    pathway.deliver_to_site(course)
    course.site.members.add(pathway.clinician2)
    client.force_login(pathway.clinician)
    url = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "record_transplant"])
    now = timezone.localtime(timezone.now(), course.site.time_zone)
    data = {
        "performed_at_0": now.date().isoformat(),
        "performed_at_1": now.strftime("%H:%M"),
        "bedside_coi_id": course.coi_id,
        "cells_administered": "140000000",
        "weight_kg": "70",
        "weighed_on": now.date().isoformat(),
        "second_person": pathway.clinician2.pk,
        "early_reason": "Moved up by the clinic",
    }
    answers = []
    with time_machine.travel(pathway.at(33.1), tick=False):
        now = timezone.localtime(timezone.now(), course.site.time_zone)
        data |= {
            "performed_at_0": (now - dt.timedelta(minutes=5)).date().isoformat(),
            "performed_at_1": (now - dt.timedelta(minutes=5)).strftime("%H:%M"),
            "weighed_on": now.date().isoformat(),
        }
        for attempt in range(6):
            response = client.post(url, data | {"second_person_password": f"guess{attempt}"})
            answers.append(said_on(response))
        # The right password no longer helps: the account is locked, as after failed logins.
        locked = client.post(url, data | {"second_person_password": PASSWORD})
        login = Client().post(
            "/admin/login/?next=/admin/", {"username": "clinician2", "password": PASSWORD}
        )
    assert all(any(SIGNATURE_NOT_ACCEPTED in m for m in a) for a in answers)
    assert any(SIGNATURE_NOT_ACCEPTED in m for m in said_on(locked))
    course.refresh_from_db()
    assert course.state == S.TRANSPLANT_SCHEDULED
    # Nothing in the answers tells a guesser which it was.
    assert not any("password of" in m or "locked" in m.lower() for a in answers for m in a)
    assert login.status_code in (403, 429)  # locked out of the admin too


def test_a_wrong_second_person_password_is_never_stored(client, course, pathway):
    """django-axes keeps a failed login's form (masking only `password`): a signature is
    checked without its form, so what it stores holds neither the password typed nor the
    patient's values, only who, from where and on which page."""
    from axes.models import AccessAttempt

    pathway.advance(course, S.TRANSPLANT_SCHEDULED)
    pathway.deliver_to_site(course)
    course.site.members.add(pathway.clinician2)
    client.force_login(pathway.clinician)
    url = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "record_transplant"])
    with time_machine.travel(pathway.at(33.1), tick=False):
        now = timezone.localtime(timezone.now(), course.site.time_zone)
        data = {
            "performed_at_0": (now - dt.timedelta(minutes=5)).date().isoformat(),
            "performed_at_1": (now - dt.timedelta(minutes=5)).strftime("%H:%M"),
            "bedside_coi_id": course.coi_id,
            "cells_administered": "140000000",
            "weight_kg": "71.4",
            "weighed_on": now.date().isoformat(),
            "second_person": pathway.clinician2.pk,
            "early_reason": "Moved up by the clinic",
            "second_person_password": "Wrong-But-Close-17",
        }
        response = client.post(url, data, REMOTE_ADDR="192.0.2.44", HTTP_USER_AGENT="Ward tablet")
    assert any(SIGNATURE_NOT_ACCEPTED in m for m in said_on(response))
    [attempt] = AccessAttempt.objects.all()
    stored = f"{attempt.post_data} {attempt.get_data}"
    assert "Wrong-But-Close-17" not in stored and "71.4" not in stored
    assert (attempt.username, attempt.ip_address, attempt.user_agent) == (
        "clinician2",
        "192.0.2.44",
        "Ward tablet",
    )
    assert attempt.path_info == url and attempt.failures_since_start == 1


def test_more_cells_than_released_are_refused_and_as_many_accepted(course, pathway):
    pathway.advance(course, S.TRANSPLANT_SCHEDULED)
    released = course.viable_cells_released
    with pytest.raises(TransitionRefused, match="more than the batch released"):
        transplant(pathway, course, cells_administered=released + 1)
    transplant(pathway, course, cells_administered=released, weight_kg=Decimal(100))
    assert course.state == S.FOLLOW_UP


def test_the_product_must_reach_the_site_through_the_chain_of_custody(course, pathway):
    pathway.advance(course, S.TRANSPLANT_SCHEDULED)
    with (
        time_machine.travel(pathway.at(33.1), tick=False),
        pytest.raises(TransitionRefused, match="leaving the lab for the site or arriving"),
    ):
        services.course_record_transplant(
            course=course,
            by=pathway.clinician,
            performed_at=pathway.at(33),
            bedside_coi_id=course.coi_id,
            cells_administered=140_000_000,
            weight_kg=Decimal(70),
            weighed_on=pathway.at(33).date(),
            second_person=pathway.clinician2,
            second_person_password=PASSWORD,
        )
    assert course.state == S.TRANSPLANT_SCHEDULED


def test_a_transplant_before_its_booked_day_needs_a_reason_and_is_a_deviation(course, pathway):
    pathway.advance(course, S.TRANSPLANT_SCHEDULED)
    early = pathway.at(32)
    with pytest.raises(TransitionRefused, match="move the booking first, or give the reason"):
        transplant(pathway, course, performed_at=early, weighed_on=early.date())
    transplant(
        pathway,
        course,
        performed_at=early,
        weighed_on=early.date(),
        early_reason="Patient admitted a day early",
    )
    [deviation] = ProtocolDeviation.objects.filter(course=course)
    assert (deviation.kind, deviation.reason) == ("before_booking", "Patient admitted a day early")


def test_the_lab_scans_the_samples_label_on_receipt(course, pathway):
    pathway.advance(course, S.HARVESTED)
    with (
        time_machine.travel(pathway.at(3), tick=False),
        pytest.raises(TransitionRefused, match="is not this course's chain-of-identity id"),
    ):
        services.course_receive_at_lab(
            course=course,
            scanned_coi_id=coi_id_format(site_code="ZZZ", year=2026, number=1),
            by=pathway.lab,
            received_at=pathway.at(2.9),
            temperature_c=Decimal("4.5"),
            transit_hours=Decimal("20"),
        )
    assert course.state == S.HARVESTED


def test_only_a_lab_user_signs_a_release(course, pathway):
    pathway.advance(course, S.EXPANDING)
    root = UserFactory(username="root", is_superuser=True)
    with pytest.raises(TransitionRefused, match="Only a lab user"):
        release_on_day(pathway, course, 28, by=root)
    assert course.state == S.EXPANDING


# Custody events are append-only.


@pytest.fixture
def custody_event(course, pathway):
    pathway.advance(course, S.HARVESTED)
    return course.custody_events.get()


def test_a_custody_event_cannot_be_changed_or_deleted_through_the_orm(custody_event):
    custody_event.location = "Somewhere else"
    with pytest.raises(AppendOnlyError):
        custody_event.save()
    with pytest.raises(AppendOnlyError):
        custody_event.delete()
    with pytest.raises(AppendOnlyError):
        CustodyEvent.objects.filter(pk=custody_event.pk).update(location="x")
    with pytest.raises(AppendOnlyError):
        CustodyEvent.objects.all().delete()
    assert CustodyEvent.objects.get(pk=custody_event.pk).location != "Somewhere else"


@pytest.mark.postgres
def test_the_database_refuses_to_change_a_custody_event(custody_event):
    from django.db import DatabaseError, transaction

    with (
        pytest.raises(DatabaseError, match=r"append-only|permission denied"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "UPDATE pathway_custodyevent SET location = 'x' WHERE id = %s", [custody_event.pk]
        )
    with (
        pytest.raises(DatabaseError, match=r"append-only|permission denied"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM pathway_custodyevent WHERE id = %s", [custody_event.pk])


def test_a_custody_event_cannot_be_changed_or_deleted_in_the_admin(
    client, custody_event, admin_user
):
    client.force_login(admin_user)
    change = reverse("admin:pathway_custodyevent_change", args=[custody_event.pk])
    client.post(change, {"location": "Elsewhere", "note": "edited"})
    delete = reverse("admin:pathway_custodyevent_delete", args=[custody_event.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert CustodyEvent.objects.get(pk=custody_event.pk).location == custody_event.location


def test_a_correction_is_a_new_event_pointing_at_the_old(custody_event, course, coordinator):
    correction = custody_event_record(
        course=course,
        kind=CustodyKind.CORRECTION,
        by=coordinator,
        scanned_coi_id=course.coi_id,
        at=custody_event.at,
        location=custody_event.location,
        corrects=custody_event,
        note="Collected at 09:40, not 10:40.",
    )
    assert correction.corrects == custody_event and course.custody_events.count() == 2


def test_a_scanned_id_that_is_not_the_courses_is_refused(custody_event, course, coordinator):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="not this course's chain-of-identity id"):
        custody_event_record(
            course=course,
            kind=CustodyKind.SHIPPED,
            by=coordinator,
            scanned_coi_id=coi_id_format(site_code="ZZZ", year=2026, number=999999),
            at=custody_event.at,
            location="Courier",
        )
    with pytest.raises(ValidationError, match="mistyped"):
        custody_event_record(
            course=course,
            kind=CustodyKind.SHIPPED,
            by=coordinator,
            scanned_coi_id=course.coi_id[:-1] + ("0" if course.coi_id[-1] != "0" else "1"),
            at=custody_event.at,
            location="Courier",
        )


def test_the_label_shows_the_id_and_a_2d_code_and_no_diagnosis(
    client, course, pathway, coordinator
):
    pathway.advance(course, S.HARVESTED)
    client.force_login(coordinator)
    page = client.get(reverse("admin:pathway_treatmentcourse_label", args=[course.pk]))
    text = page.content.decode()
    assert page.status_code == 200 and course.coi_id in text and "<svg" in text
    for word in ("COPD", "emphysema", "P63", "progenitor", "stem"):
        assert word.lower() not in text.lower()


def test_a_course_without_a_coi_id_has_no_label(client, course, coordinator):
    client.force_login(coordinator)
    assert (
        client.get(reverse("admin:pathway_treatmentcourse_label", args=[course.pk])).status_code
        == 404
    )


# The same in the admin.


def test_the_lab_enters_qc_on_the_batch_and_another_signs_the_release(client, course, pathway):
    pathway.advance(course, S.EXPANDING)
    batch = Batch.objects.get(course=course)
    client.force_login(pathway.lab)
    url = reverse("admin:pathway_batch_change", args=[batch.pk])
    client.post(
        url,
        {
            "identity_p63_pct": "91",
            "purity_pct": "96",
            "sterility_negative": "true",
            "viability_pct": "85",
            "viable_cells": "150000000",
            "extra_qc_results": "{}",
        }
        | NO_COUNTS,
    )
    batch.refresh_from_db()
    assert (batch.viability_pct, batch.qc_recorded_by) == (Decimal(85), pathway.lab)
    assert course.custody_events.filter(kind=CustodyKind.QC_RECORDED).exists()

    release = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "release"])
    with time_machine.travel(pathway.at(31), tick=False):
        refused = client.post(release, {"password": PASSWORD, "meaning": "Released"})
        assert any("second lab user must sign" in str(m) for m in refused.context["messages"])
        client.force_login(pathway.lab2)
        client.post(release, {"password": PASSWORD, "meaning": "Released for clinical use"})
    course.refresh_from_db()
    assert course.state == S.RELEASED
    assert Batch.objects.get(pk=batch.pk).release_meaning == "Released for clinical use"


def test_a_custody_event_with_another_courses_id_is_refused_in_the_admin(
    client, course, pathway, coordinator
):
    pathway.advance(course, S.RELEASED)
    client.force_login(coordinator)
    url = reverse("admin:pathway_custodyevent_add")
    data = {
        "course": course.pk,
        "kind": "shipped_to_site",
        "at_0": "2026-01-01",
        "at_1": "10:00",
        "location": "Courier van 4",
        "note": "",
    }
    wrong = client.post(
        url, data | {"scanned_coi_id": coi_id_format(site_code="ZZZ", year=2026, number=1)}
    )
    assert wrong.status_code == 200
    assert "is not this course&#x27;s chain-of-identity id" in wrong.content.decode()
    done = client.post(url, data | {"scanned_coi_id": course.coi_id.lower()})
    assert done.status_code == 302
    assert course.custody_events.filter(kind="shipped_to_site", by=coordinator).exists()


def test_batches_due_for_release_are_listed(client, course, pathway, admin_user):
    pathway.advance(course, S.EXPANDING)
    url = reverse("admin:pathway_batch_changelist")
    with time_machine.travel(pathway.on_expansion_day(course, 20), tick=False):
        client.force_login(admin_user)  # sessions end after 15 idle minutes: log in "then"
        assert list(client.get(url, {"due": "yes"}).context["cl"].result_list) == []
    with time_machine.travel(pathway.on_expansion_day(course, 21), tick=False):
        client.force_login(admin_user)
        assert [b.course for b in client.get(url, {"due": "yes"}).context["cl"].result_list] == [
            course
        ]


def test_a_batch_is_listed_due_from_the_midnight_its_release_is_allowed(
    client, course, pathway, admin_user
):
    """Received at 23:30 in the site's calendar: day 21 begins 20 days and 30 minutes later,
    when the release is allowed, and the list says so then, not at 23:30 that evening."""
    zone = course.site.time_zone
    received_on = timezone.localdate(timezone=zone) - dt.timedelta(days=30)
    received_at = dt.datetime.combine(received_on, dt.time(23, 30), tzinfo=zone)
    path = pathway.starting(received_at - dt.timedelta(days=2.9))
    path.advance(course, S.EXPANDING)
    day_21 = dt.datetime.combine(received_on + dt.timedelta(days=21), dt.time(0, 30), tzinfo=zone)
    url = reverse("admin:pathway_batch_changelist")
    for moment, listed in ((day_21 - dt.timedelta(hours=1), []), (day_21, [course])):
        with time_machine.travel(moment, tick=False):
            client.force_login(admin_user)
            due = client.get(url, {"due": "yes"}).context["cl"].result_list
            assert [b.course for b in due] == listed
    with time_machine.travel(day_21 - dt.timedelta(minutes=20), tick=False):
        path.record_qc(course)
    with time_machine.travel(day_21, tick=False):
        services.course_release(course=course, by=path.lab2, password=PASSWORD)
    assert course.state == S.RELEASED


def test_the_transition_log_is_append_only(course, coordinator):
    log = services.course_start_evaluation(course=course, by=coordinator)
    log.note = "rewritten"
    with pytest.raises(AppendOnlyError):
        log.save()
    with pytest.raises(AppendOnlyError):
        log.delete()
    with pytest.raises(AppendOnlyError):
        type(log).objects.filter(pk=log.pk).update(note="x")


@pytest.mark.postgres
def test_the_database_refuses_to_change_the_transition_log(course, coordinator):
    from django.db import DatabaseError, transaction

    log = services.course_start_evaluation(course=course, by=coordinator)
    with (
        pytest.raises(DatabaseError, match=r"append-only|permission denied"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE pathway_transitionlog SET note = 'x' WHERE id = %s", [log.pk])


def test_numeric_extra_tests_are_held_to_their_limits(course, pathway):
    course.protocol.qc_tests.create(name="Endotoxin", kind="at_most", limit="0.5", unit="EU/mL")
    pathway.advance(course, S.EXPANDING)
    with pytest.raises(TransitionRefused) as refused:
        release_on_day(pathway, course, 28, extra_qc_results={"Endotoxin": "0.51"})
    assert "Endotoxin is 0.51 EU/mL; the protocol needs ≤ 0.5 EU/mL." in refused.value.reasons
    release_on_day(pathway, course, 29, extra_qc_results={"Endotoxin": "0.5"})
    assert course.state == S.RELEASED


def qc_page(client, batch):
    return client.get(reverse("admin:pathway_batch_change", args=[batch.pk]))


def test_each_extra_test_is_a_field_of_the_qc_form_and_a_refusal_keeps_what_was_typed(
    client, course, pathway
):
    mycoplasma = course.protocol.qc_tests.create(name="Mycoplasma")
    endotoxin = course.protocol.qc_tests.create(
        name="Endotoxin", kind="at_most", limit="0.5", unit="EU/mL"
    )
    pathway.advance(course, S.EXPANDING)
    batch = Batch.objects.get(course=course)
    client.force_login(pathway.lab)
    page = qc_page(client, batch).content.decode()
    assert "Mycoplasma" in page and "Endotoxin (EU/mL)" in page and "≤ 0.5 EU/mL" in page
    url = reverse("admin:pathway_batch_change", args=[batch.pk])
    typed = {
        "identity_p63_pct": "91",
        "purity_pct": "96",
        "sterility_negative": "true",
        "viability_pct": "85",
        "viable_cells": "",  # left empty
        f"qc_test_{mycoplasma.pk}": "passed",
        f"qc_test_{endotoxin.pk}": "0.2",
    } | NO_COUNTS
    refused = client.post(url, typed)
    assert refused.status_code == 200
    assert "viable_cells" in refused.context["adminform"].form.errors
    assert not [m for m in refused.context["messages"] if m.level_tag == "success"]
    assert 'value="96"' in refused.content.decode() and 'value="0.2"' in refused.content.decode()
    batch.refresh_from_db()
    assert batch.qc_recorded_at is None and batch.viability_pct is None

    saved = client.post(url, typed | {"viable_cells": "150000000"})
    assert saved.status_code == 302
    batch.refresh_from_db()
    assert batch.extra_qc_results == {"Mycoplasma": True, "Endotoxin": "0.2"}
    assert batch.qc_recorded_by == pathway.lab


@pytest.mark.parametrize("value", ['{"Mycoplasma": true}', "7", "NaN", "1e999"])
def test_nonsense_in_an_extra_test_is_refused_beside_it(client, course, pathway, value):
    endotoxin = course.protocol.qc_tests.create(
        name="Endotoxin", kind="at_most", limit="0.5", unit="EU/mL"
    )
    mycoplasma = course.protocol.qc_tests.create(name="Mycoplasma")
    pathway.advance(course, S.EXPANDING)
    batch = Batch.objects.get(course=course)
    client.force_login(pathway.lab)
    response = client.post(
        reverse("admin:pathway_batch_change", args=[batch.pk]),
        {
            "identity_p63_pct": "91",
            "purity_pct": "96",
            "sterility_negative": "true",
            "viability_pct": "85",
            "viable_cells": "150000000",
            f"qc_test_{mycoplasma.pk}": value,
            f"qc_test_{endotoxin.pk}": value,
        }
        | NO_COUNTS,
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert f"qc_test_{mycoplasma.pk}" in errors
    batch.refresh_from_db()
    assert batch.qc_recorded_at is None


@pytest.mark.parametrize("state", [S.EXPANDING, S.RELEASED])
def test_a_withdrawn_courses_product_is_discarded_and_counted_nowhere_as_expanding(
    client, course, pathway, coordinator, state
):
    from reporting.dashboard import site_dashboard
    from reporting.weekly_report import week_label, weekly_report

    pathway.advance(course, state)
    services.course_withdraw(course=course, by=coordinator, reason="Patient moved abroad")
    batch = Batch.objects.get(course=course)
    assert batch.status == "discarded"
    [discarded] = course.custody_events.filter(kind=CustodyKind.DISCARDED)
    assert discarded.by == coordinator and "Patient moved abroad" in discarded.note
    [row] = site_dashboard(sites=[course.site])
    assert row["batches_in_expansion"] == 0
    report = weekly_report(week=week_label(timezone.localdate()), site=course.site)
    assert batch not in report.batches_in_expansion
    client.force_login(pathway.lab)
    listed = client.get(reverse("admin:pathway_batch_changelist") + "?status__exact=expanding")
    assert batch.coi_id not in listed.content.decode()


@pytest.mark.parametrize("how", ["fail_qc", "reject_sample"])
def test_a_failed_or_rejected_batch_records_its_disposal(course, pathway, how):
    pathway.advance(course, S.EXPANDING)
    getattr(services, f"course_{how}")(course=course, by=pathway.lab, reason="Contaminated")
    [discarded] = course.custody_events.filter(kind=CustodyKind.DISCARDED)
    assert discarded.by == pathway.lab


def test_a_held_courses_batch_shows_as_on_hold(client, course, pathway, coordinator):
    pathway.advance(course, S.EXPANDING)
    services.course_hold(course=course, by=coordinator, reason="Exacerbation")
    client.force_login(pathway.lab)
    listed = client.get(reverse("admin:pathway_batch_changelist")).content.decode()
    assert "Expanding (course on hold)" in listed


def test_a_voided_shipment_or_a_receipt_before_it_does_not_bring_the_product_to_the_bedside(
    course, pathway
):
    pathway.advance(course, S.TRANSPLANT_SCHEDULED)
    record = {"course": course, "by": pathway.coordinator, "scanned_coi_id": course.coi_id}
    with pytest.raises(ValidationError, match="record its shipment first"):
        custody_event_record(
            kind=CustodyKind.RECEIVED_AT_SITE, at=pathway.at(31.4), location="Ward", **record
        )
    shipped = custody_event_record(
        kind=CustodyKind.SHIPPED_TO_SITE, at=pathway.at(31.5), location="Lab", **record
    )
    with pytest.raises(ValidationError, match="recorded as shipped to the site already"):
        custody_event_record(
            kind=CustodyKind.SHIPPED_TO_SITE, at=pathway.at(31.55), location="Lab", **record
        )
    received = custody_event_record(
        kind=CustodyKind.RECEIVED_AT_SITE, at=pathway.at(31.6), location="Ward", **record
    )
    course.site.members.add(pathway.clinician2)
    custody_event_record(
        kind=CustodyKind.CORRECTION,
        at=pathway.at(31.7),
        location="Lab",
        corrects=shipped,
        note="Wrong product scanned",
        **record,
    )
    assert received.kind == CustodyKind.RECEIVED_AT_SITE
    with pytest.raises(TransitionRefused, match="leaving the lab for the site"):
        transplant(pathway, course)


def test_the_products_journey_is_recorded_by_its_own_roles_while_it_travels(
    client, course, pathway
):
    record = {"course": course, "scanned_coi_id": None, "location": "Lab"}
    pathway.advance(course, S.EXPANDING)
    record["scanned_coi_id"] = course.coi_id
    with pytest.raises(ValidationError, match="only between its release and the transplant"):
        custody_event_record(
            kind=CustodyKind.SHIPPED_TO_SITE, by=pathway.lab, at=pathway.at(20), **record
        )
    pathway.advance(course, S.RELEASED)
    with pytest.raises(ValidationError, match="recorded by the site, not by your role"):
        custody_event_record(
            kind=CustodyKind.RECEIVED_AT_SITE, by=pathway.lab, at=pathway.at(31.5), **record
        )
    client.force_login(pathway.lab)
    receive = reverse("admin:pathway_treatmentcourse_custody", args=[course.pk, "received_at_site"])
    assert client.get(receive).status_code == 403
    custody_event_record(
        kind=CustodyKind.SHIPPED_TO_SITE, by=pathway.lab, at=pathway.at(31.5), **record
    )
    assert course.custody_events.filter(kind=CustodyKind.SHIPPED_TO_SITE).count() == 1


def test_a_held_courses_batch_is_not_counted_as_in_expansion(course, pathway, coordinator):
    from reporting.dashboard import site_dashboard

    pathway.advance(course, S.EXPANDING)
    services.course_hold(course=course, by=coordinator, reason="Exacerbation")
    [row] = site_dashboard(sites=[course.site])
    assert row["batches_in_expansion"] == 0


def _count(pathway, course, day, cells, viability="90"):
    """The first lab user counts the batch on expansion day `day`."""
    batch = Batch.objects.get(course=course, status="expanding")
    with time_machine.travel(batch.received_at + dt.timedelta(days=day, hours=1), tick=False):
        return batch_record_cell_count(
            batch=batch,
            by=pathway.lab,
            counted_at=batch.received_at + dt.timedelta(days=day),
            total_cells=int(cells),
            viability_pct=Decimal(viability),
        )


def test_counts_forecast_the_day_the_target_dose_is_reached(client, course, pathway):
    from pathway.selectors import batch_growth_forecast

    pathway.advance(course, S.EXPANDING)
    for day, cells in ((3, 5e6), (6, 10e6), (9, 20e6)):  # doubling every 3 days
        _count(pathway, course, day, cells / 0.9)
    batch = Batch.objects.get(course=course)
    forecast = batch_growth_forecast(batch=batch)  # 2.0 × 10⁶/kg × 70 kg = 140 × 10⁶
    assert forecast.day == pytest.approx(9 + 3 * math.log2(140 / 20), abs=0.05)
    client.force_login(pathway.lab)
    page = client.get(reverse("admin:pathway_batch_change", args=[batch.pk])).content.decode()
    assert "140 × 10⁶ viable cells on day 17" in page
    assert not Alert.objects.filter(kind="growth_shortfall").exists()


def test_slow_growth_alerts_the_coordinator_once_with_the_forecast(course, pathway, coordinator):
    course.patient.coordinator = coordinator
    course.patient.save()
    pathway.advance(course, S.EXPANDING)
    for day, cells in ((3, 1e6), (6, 1.2e6), (9, 1.45e6), (12, 1.7e6)):  # far too slow
        _count(pathway, course, day, cells)
    [alert] = Alert.objects.filter(kind="growth_shortfall")
    assert "may not hold the minimum dose" in alert.message and "by day 35" in alert.message


def test_a_count_outside_the_culture_is_refused_beside_it(client, course, pathway):
    pathway.advance(course, S.EXPANDING)
    batch = Batch.objects.get(course=course)
    client.force_login(pathway.lab)
    url = reverse("admin:pathway_batch_change", args=[batch.pk])
    before = batch.received_at - dt.timedelta(days=1)
    response = client.post(
        url,
        {
            "cell_counts-TOTAL_FORMS": "1",
            "cell_counts-INITIAL_FORMS": "0",
            "cell_counts-0-counted_at_0": before.date().isoformat(),
            "cell_counts-0-counted_at_1": "10:00",
            "cell_counts-0-total_cells": "5000000",
            "cell_counts-0-viability_pct": "90",
        },
    )
    assert response.status_code == 200
    [formset] = [f.formset for f in response.context["inline_admin_formsets"]]
    assert formset.errors, formset.errors
    assert "A count is made between the sample" in str(formset.errors)
    assert not batch.cell_counts.exists()


def test_the_timeline_shows_the_growth_forecast(course, pathway):
    from reporting.timeline import course_timeline

    pathway.advance(course, S.EXPANDING)
    for day, cells in ((3, 5e6), (6, 10e6), (9, 20e6)):
        _count(pathway, course, day, cells / 0.9)
    with time_machine.travel(pathway.at(2.9 + 10), tick=False):
        timeline = course_timeline(course=course)
    [expansion] = [step for step in timeline.steps if step.name == "Expansion"]
    assert "target dose (140 × 10⁶ cells) forecast for day 17" in expansion.detail


# What is entered is possible: every percentage 0–100, an unusual one typed again.


@pytest.mark.parametrize("field", ["identity_p63_pct", "purity_pct", "viability_pct"])
def test_a_percentage_over_100_is_refused_by_the_service_and_100_is_taken(course, pathway, field):
    pathway.advance(course, S.EXPANDING)
    with pytest.raises(ValidationError) as refused:
        pathway.record_qc(course, **{field: Decimal("950")})
    assert "must be between 0% and 100%; 950% was entered." in refused.value.message_dict[field][0]
    batch = Batch.objects.get(course=course)
    assert batch.qc_recorded_at is None and getattr(batch, field) is None
    pathway.record_qc(course, **{field: Decimal("100")})
    batch.refresh_from_db()
    assert getattr(batch, field) == Decimal("100")


def qc_form_of(client, course, pathway, **typed):
    """The lab user on the QC form of the course's expanding batch: its URL and what is typed
    (in spec unless told otherwise)."""
    pathway.advance(course, S.EXPANDING)
    batch = Batch.objects.get(course=course)
    client.force_login(pathway.lab)
    url = reverse("admin:pathway_batch_change", args=[batch.pk])
    values = {
        "identity_p63_pct": "91",
        "purity_pct": "96",
        "sterility_negative": "true",
        "viability_pct": "85",
        "viable_cells": "150000000",
    }
    return batch, url, values | typed | NO_COUNTS


def test_purity_950_is_refused_beside_its_field_on_the_qc_form_and_nothing_is_saved(
    client, course, pathway
):
    batch, url, typed = qc_form_of(client, course, pathway, purity_pct="950")
    refused = client.post(url, typed)
    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors["purity_pct"] == [
        "Purity must be between 0% and 100%; 950% was entered."
    ]
    batch.refresh_from_db()
    assert batch.qc_recorded_at is None and batch.purity_pct is None
    assert not course.custody_events.filter(kind=CustodyKind.QC_RECORDED).exists()


def test_an_unusual_result_is_saved_only_once_typed_again(client, course, pathway):
    batch, url, typed = qc_form_of(client, course, pathway, purity_pct="9.5")
    asked = client.post(url, typed)
    assert asked.status_code == 200
    form = asked.context["adminform"].form
    assert form.errors["purity_pct"] == [
        "Purity of 9.5% is unusual (expected between 20% and 100%). If it is right, type it "
        "again to confirm it; otherwise correct it."
    ]
    assert form["purity_pct"].value() == ""  # to be typed again, not ticked through
    batch.refresh_from_db()
    assert batch.qc_recorded_at is None

    second_look = form["second_look"].value()
    assert second_look
    retyped = client.post(url, typed | {"second_look": second_look, "purity_pct": "95"})
    assert retyped.status_code == 302  # corrected: 95 is usual, nothing more to confirm
    batch.refresh_from_db()
    assert batch.purity_pct == Decimal("95")


def test_the_same_unusual_value_typed_again_is_taken(client, course, pathway):
    batch, url, typed = qc_form_of(client, course, pathway, viability_pct="15")
    asked = client.post(url, typed)
    second_look = asked.context["adminform"].form["second_look"].value()
    other = client.post(url, typed | {"second_look": second_look, "viability_pct": "14"})
    assert other.status_code == 200, "another unusual value is asked about again"
    confirmed = client.post(url, typed | {"second_look": second_look, "viability_pct": "15.0"})
    assert confirmed.status_code == 302
    batch.refresh_from_db()
    assert batch.viability_pct == Decimal("15")


def test_an_unusual_result_through_the_service_needs_values_checked(course, pathway):
    pathway.advance(course, S.EXPANDING)
    with pytest.raises(ValidationError, match="Viable cells of 100 cells is unusual"):
        pathway.record_qc(course, viable_cells=100)
    batch = pathway.record_qc(course, viable_cells=100, values_checked=True)
    assert batch.viable_cells == 100


def test_a_percent_extra_test_over_100_is_refused(course, pathway):
    course.protocol.qc_tests.create(name="CD45-", kind="at_least", limit="90", unit="%")
    pathway.advance(course, S.EXPANDING)
    with pytest.raises(ValidationError, match="not a result this test can have"):
        pathway.record_qc(course, extra_qc_results={"CD45-": "950"})
    pathway.record_qc(course, extra_qc_results={"CD45-": "100"})


def test_a_release_page_never_says_an_impossible_result_meets_the_specification(
    client, course, pathway
):
    """A result saved before its range was checked (kept from an older version) is shown as
    refused, never as meeting the specification."""
    pathway.advance(course, S.EXPANDING)
    pathway.record_qc(course)
    Batch.objects.filter(course=course).update(purity_pct=Decimal("950"))
    client.force_login(pathway.lab2)
    release = reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, "release"])
    with time_machine.travel(pathway.at(31), tick=False):
        page = client.get(release).content.decode()
        assert "Every result meets the specification" not in page
        assert "Purity must be between 0% and 100%; 950.0% was entered." in page
        client.post(release, {"password": PASSWORD, "meaning": "Released"})
    course.refresh_from_db()
    assert course.state == S.EXPANDING


def test_a_percent_limit_over_100_is_refused():
    from pathway.models import Protocol, ProtocolQcTest

    test = ProtocolQcTest(
        protocol=Protocol.objects.get(is_default=True),
        name="CD45-",
        kind="at_least",
        limit=Decimal("950"),
        unit="%",
    )
    with pytest.raises(ValidationError, match="950"):
        test.full_clean()

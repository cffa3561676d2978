"""The worklist: what each user has to do next, built from the state of things, not from
lists anyone keeps. One query per kind of work, whatever the number of rows."""

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, Exists, OuterRef, Subquery
from django.urls import reverse
from django.utils import timezone

from common.zones import date_words, local_words
from enquiries.models import Consultation, ConsultationMode, ConsultationStatus, EnquiryStatus
from enquiries.rules import enquiry_answer_due
from enquiries.selectors import enquiries_open, sites_default_protocols
from enquiries.suggestions import enquiry_suggestion
from pathway.models import (
    TRANSITION_LABELS,
    Batch,
    BatchStatus,
    CellBankLot,
    CustodyEvent,
    CustodyKind,
    LotStatus,
    ProductUnit,
    TreatmentCourse,
    UnitStatus,
)
from pathway.states import CourseState, Therapy
from scheduling.alerts import alerts_for
from scheduling.models import (
    Alert,
    AlertKind,
    PatientRequest,
    PatientRequestKind,
    Reservation,
    ReservationPurpose,
    Resource,
    ResourceKind,
    Severity,
    Visit,
    VisitKind,
    VisitStatus,
    WorkAssignment,
)
from scheduling.windows import window_words

# Follow-ups come onto the list this many days before their window opens.
FOLLOW_UP_NOTICE_DAYS = 14
# Bookings not confirmed by the patient come onto the list this many days before.
CONFIRM_NOTICE_DAYS = 2
# The row an alert about a visit joins, when that visit is on the list.
VISIT_ROW_OF_ALERT = {AlertKind.VISIT_OVERDUE: "overdue", AlertKind.FOLLOW_UP_TO_BOOK: "follow_up"}
# At most this many rows of one kind; the rest are counted and found through their list.
ROWS_PER_KIND = 100


# How much of a patient's words a row quotes; the rest is a click away on the row.
QUOTED_CHARACTERS = 100


def _quoted(text: str) -> str:
    return text if len(text) <= QUOTED_CHARACTERS else text[:QUOTED_CHARACTERS].rstrip() + "…"


def _removed_on_arrival(request: PatientRequest) -> str:
    return request.inbound.removed_on_arrival if request.inbound_id else ""


@dataclass
class WorkItem:
    key: str  # stable: what an assignment refers to
    what: str
    course: TreatmentCourse | None  # None for work on the site's stock (a lot to release)
    due: dt.datetime | dt.date | None
    action: str
    url: str
    post: bool = False  # the button acts at once (a POST), rather than opening a form
    detail: str = ""
    note: str = ""  # said in full, whatever the detail's length: e.g. what a text lost on arrival
    text: str = ""  # a patient's words in full, where the detail quotes only their start
    assigned_to: object = None
    urgent: bool = False  # first on the list, whatever is due
    alert_url: str = ""  # the row's alert, acknowledged from the same row
    stock_site: object = None  # the site whose stock the work is on, when no course is
    subject: str = ""  # what the work is on, when no patient is (a lot)
    subject_url: str = ""

    @property
    def site(self):
        return self.course.site if self.course is not None else self.stock_site

    @property
    def about(self):
        """Whom or what the work is on: the patient, or the lot."""
        return self.course.patient if self.course is not None else self.subject

    @property
    def due_words(self) -> str:
        """The due time in the site's zone, named; a date is a day in the site's calendar."""
        if self.due is None:
            return ""
        if isinstance(self.due, dt.datetime):
            return local_words(self.due, self.site.time_zone)
        return date_words(self.due)

    @property
    def overdue(self) -> bool:
        today = timezone.localdate(timezone=self.site.time_zone)
        if isinstance(self.due, dt.datetime):
            return self.due < timezone.now()
        return self.due is not None and self.due < today


def _transition_url(course, name: str) -> str:
    return reverse("admin:pathway_treatmentcourse_transition", args=[course.pk, name])


def _courses(sites, state, therapy=None):
    courses = TreatmentCourse.objects.filter(site__in=sites, state=state)
    if therapy is not None:
        courses = courses.filter(protocol__therapy=therapy)
    return courses.select_related("patient", "site", "protocol")


def _booking_deadline(course) -> dt.date:
    released_on = timezone.localdate(course.released_at, course.site.time_zone)
    return released_on + dt.timedelta(days=course.protocol.transplant_booking_max_days)


def _next_dose_held(course):
    """When the slot held for the course's next dose starts (annotated), if one is."""
    return course.next_dose_at


# Courses waiting in a state for one step: the state, the therapy whose courses wait there
# for it (None: every therapy's), the row's key, its words, the step, when it is due.
COURSES_WAITING = (
    (CourseState.EVALUATION, None, "decide", "Decide eligibility", "approve", lambda c: None),
    (
        CourseState.ELIGIBLE,
        Therapy.P63,
        "harvest",
        "Book the harvest",
        "schedule_harvest",
        lambda c: None,
    ),
    (
        CourseState.HARVESTED,
        Therapy.P63,
        "receive",
        "Sample due at the lab",
        "receive_at_lab",
        lambda c: c.harvested_at,
    ),
    (
        CourseState.RELEASED,
        Therapy.P63,
        "transplant",
        "Book the transplant",
        "schedule_transplant",
        _booking_deadline,
    ),
    (
        CourseState.ELIGIBLE,
        Therapy.MSC,
        "allocate",
        "Allocate the product",
        "allocate_product",
        lambda c: None,
    ),
    (
        CourseState.PRODUCT_ALLOCATED,
        Therapy.MSC,
        "infusion",
        "Book the infusion",
        "schedule_infusion",
        lambda c: None,
    ),
    (
        CourseState.INFUSED,
        Therapy.MSC,
        "next_infusion",
        "Book the next infusion",
        "schedule_infusion",
        _next_dose_held,
    ),
)


def _courses_of(requests) -> dict:
    """Each patient's latest course, for requests that name no visit: one query."""
    patients = {request.patient_id for request in requests if not request.visit_id}
    latest = {}
    for course in (
        TreatmentCourse.objects.filter(patient_id__in=patients)
        .select_related("patient", "site")
        .order_by("patient_id", "-referred_at")
    ):
        latest.setdefault(course.patient_id, course)
    return latest


def worklist(*, user, sites, now: dt.datetime | None = None) -> list[WorkItem]:
    """Every piece of work at `sites` that `user` may do, most urgent first."""
    now = now or timezone.now()
    may = user.has_perm
    items: list[WorkItem] = []

    for state, therapy, key, what, step, due in COURSES_WAITING:
        if not may(f"pathway.{step}_course"):
            continue
        courses = _courses(sites, state, therapy)
        if state == CourseState.INFUSED:
            courses = courses.annotate(next_dose_at=_next_dose_slot())
        for course in courses[:ROWS_PER_KIND]:
            items.append(
                WorkItem(
                    key=f"{key}.c{course.pk}",
                    what=what,
                    course=course,
                    due=due(course),
                    action=TRANSITION_LABELS[step],
                    url=_transition_url(course, step),
                )
            )
    if may("pathway.change_batch") or may("pathway.release_course"):
        batches = (
            Batch.objects.filter(course__site__in=sites, status=BatchStatus.EXPANDING)
            .exclude(course__state=CourseState.ON_HOLD)
            .select_related("course__patient", "course__site", "course__protocol", "qc_recorded_by")
            .order_by("received_at")
        )
        for batch in batches[:ROWS_PER_KIND]:
            course = batch.course
            first_day, last_day = course.protocol.release_window(
                timezone.localdate(batch.received_at, course.site.time_zone)
            )
            if batch.qc_recorded:
                if may("pathway.release_course"):
                    items.append(
                        WorkItem(
                            key=f"release.b{batch.pk}",
                            what="Release to sign",
                            course=course,
                            due=last_day,
                            action="Sign the release",
                            url=_transition_url(course, "release"),
                            detail=f"QC entered by {batch.qc_recorded_by}",
                        )
                    )
            elif may("pathway.change_batch"):
                items.append(
                    WorkItem(
                        key=f"qc.b{batch.pk}",
                        what="QC to enter",
                        course=course,
                        due=first_day,
                        action="Enter QC",
                        url=reverse("admin:pathway_batch_change", args=[batch.pk]),
                        detail=f"day {batch.expansion_day} of expansion",
                    )
                )
    ship = may("pathway.change_batch") and may("pathway.add_custodyevent")
    receive = may("pathway.add_custodyevent") and (
        may("pathway.record_transplant_course") or may("scheduling.change_visit")
    )
    if ship or receive:
        items += _product_custody_items(sites=sites, ship=ship, receive=receive)
    # Procedures booked for today or earlier, to record at the bedside.
    for transition, state, kind, what, action in (
        (
            "record_transplant",
            CourseState.TRANSPLANT_SCHEDULED,
            VisitKind.TRANSPLANT,
            "Record the transplant",
            "Record transplant",
        ),
        (
            "record_infusion",
            CourseState.INFUSION_SCHEDULED,
            VisitKind.INFUSION,
            "Record the infusion",
            "Record infusion",
        ),
    ):
        if not may(f"pathway.{transition}_course"):
            continue
        visits = (
            Visit.objects.filter(
                course__site__in=sites,
                course__state=state,
                kind=kind,
                status=VisitStatus.BOOKED,
                scheduled_at__lt=now + dt.timedelta(days=1),
            )
            .select_related("course__patient", "course__site")
            .order_by("scheduled_at")
        )
        for visit in visits[:ROWS_PER_KIND]:
            items.append(
                WorkItem(
                    key=f"{transition}.v{visit.pk}",
                    what=what,
                    course=visit.course,
                    due=visit.scheduled_at,
                    action=action,
                    url=_transition_url(visit.course, transition),
                )
            )
    ship_units = may("pathway.change_cellbanklot") and may("pathway.add_custodyevent")
    receive_units = may("pathway.add_custodyevent") and (
        may("pathway.record_infusion_course") or may("scheduling.change_visit")
    )
    if ship_units or receive_units:
        items += _unit_custody_items(sites=sites, ship=ship_units, receive=receive_units)
    if may("pathway.change_cellbanklot") or may("pathway.release_lot"):
        items += _lot_items(sites=sites, user=user)
    if may("enquiries.change_consultation"):
        items += _consultation_items(sites=sites, now=now)
    if may("patients.add_lungfunctiontest"):
        to_measure = (
            Visit.objects.filter(
                course__site__in=sites,
                kind=VisitKind.FOLLOW_UP,
                status=VisitStatus.BOOKED,
                scheduled_at__lt=now + dt.timedelta(days=1),
            )
            .exclude(course__state__in=[CourseState.ON_HOLD, CourseState.WITHDRAWN])
            .select_related("course__patient", "course__site", "protocol_visit")
            .order_by("scheduled_at")
        )
        for visit in to_measure[:ROWS_PER_KIND]:
            items.append(
                WorkItem(
                    key=f"measure.v{visit.pk}",
                    what=f"Record the {visit.label}",
                    course=visit.course,
                    due=visit.scheduled_at,
                    action="Record the measurements",
                    url=reverse("admin:scheduling_visit_change", args=[visit.pk]),
                )
            )
    if may("scheduling.change_visit"):
        requests = (
            PatientRequest.objects.filter(patient__site__in=sites, done_at__isnull=True)
            .select_related(
                "patient__site",
                "visit__course__site",
                "visit__course__patient",
                "visit__protocol_visit",
                "inbound",
            )
            .order_by("created_at")
        )
        courses = _courses_of(requests[:ROWS_PER_KIND])
        for request in requests[:ROWS_PER_KIND]:
            course = request.visit.course if request.visit_id else courses.get(request.patient_id)
            if course is None:
                continue
            moves = request.kind == PatientRequestKind.CHANGE and request.visit_id
            items.append(
                WorkItem(
                    key=f"request.r{request.pk}",
                    what=f"{request.get_kind_display()} ({request.source})"
                    + (f": {request.visit.label}" if request.visit_id else ""),
                    course=course,
                    due=None,
                    action="Move the visit" if moves else "Done",
                    url=(
                        reverse("admin:scheduling_visit_change", args=[request.visit_id])
                        if moves
                        else reverse("worklist-done")
                    ),
                    post=not moves,
                    detail=f"“{_quoted(request.text)}” · "
                    f"{local_words(request.created_at, request.patient.site.time_zone)}",
                    note=_removed_on_arrival(request),
                    text=request.text if len(request.text) > QUOTED_CHARACTERS else "",
                    urgent=True,
                )
            )
        unconfirmed = (
            Visit.objects.filter(
                course__site__in=sites,
                status=VisitStatus.BOOKED,
                confirmed_at__isnull=True,
                scheduled_at__gt=now,
                scheduled_at__lt=now + dt.timedelta(days=CONFIRM_NOTICE_DAYS),
            )
            .exclude(course__state=CourseState.ON_HOLD)
            .select_related("course__patient", "course__site", "protocol_visit")
            .order_by("scheduled_at")
        )
        for visit in unconfirmed[:ROWS_PER_KIND]:
            items.append(
                WorkItem(
                    key=f"confirm.v{visit.pk}",
                    what=f"Booking to confirm: {visit.label}",
                    course=visit.course,
                    due=visit.scheduled_at,
                    action="Confirmed by phone",
                    url=reverse("worklist-done"),
                    post=True,
                    detail="Not confirmed by the patient yet: a call, then tick it here.",
                )
            )
        horizon = timezone.localdate(now) + dt.timedelta(days=FOLLOW_UP_NOTICE_DAYS)
        to_book = (
            Visit.objects.filter(
                course__site__in=sites,
                course__state=CourseState.FOLLOW_UP,
                kind=VisitKind.FOLLOW_UP,
                status=VisitStatus.PLANNED,
                window_opens_on__lte=horizon,
                window_closes_on__gte=timezone.localdate(now) - dt.timedelta(days=1),
            )
            .select_related("course__patient", "course__site", "protocol_visit")
            .order_by("window_closes_on")
        )
        # The sites' clinics, in one query whatever the sites the rows are at.
        clinics = {}
        for clinic in Resource.objects.filter(
            kind=ResourceKind.LUNG_FUNCTION, site__in=sites
        ).order_by("-id"):
            clinics[clinic.site_id] = clinic  # the first of a site's, as course_resource
        for visit in to_book[:ROWS_PER_KIND]:
            site = visit.course.site
            url = (
                reverse("admin:pathway_treatmentcourse_follow_ups", args=[visit.course_id])
                if clinics.get(site.pk)
                else reverse("admin:scheduling_visit_change", args=[visit.pk])
            )
            items.append(
                WorkItem(
                    key=f"follow_up.v{visit.pk}",
                    what=f"Book the {visit.label}",
                    course=visit.course,
                    due=visit.window_closes_on,
                    action="Book",
                    url=url,
                    detail=f"window {window_words(visit)}",
                )
            )
        overdue = (
            Visit.objects.overdue(sites=sites, at=now)
            .select_related("course__patient", "course__site", "protocol_visit")
            .order_by("window_closes_on")
        )
        for visit in overdue[:ROWS_PER_KIND]:
            items.append(
                WorkItem(
                    key=f"overdue.v{visit.pk}",
                    what=f"{visit.label}: overdue",
                    course=visit.course,
                    due=visit.window_closes_on,
                    action="Mark missed",
                    url=reverse("admin:scheduling_visit_missed", args=[visit.pk]),
                )
            )
    if may("enquiries.change_enquiry"):
        items += _enquiry_items(sites=sites)
    if may("scheduling.change_alert"):
        alerts = (
            Alert.objects.filter(alerts_for(user), site__in=sites, acknowledged_at__isnull=True)
            .exclude(snoozed_until__gt=now)
            .select_related("course__patient", "course__site", "site")
            .order_by("-created_at")
        )
        rows = {item.key: item for item in items}
        for alert in alerts[:ROWS_PER_KIND]:
            acknowledge = reverse("admin:scheduling_alert_acknowledge", args=[alert.pk])
            raised = f"Raised {local_words(alert.created_at, alert.site.time_zone)}."
            # One thing, one row: an alert about a visit already on the list rides on its row.
            if alert.enquiry_id:
                row = rows.get(f"enquiry.e{alert.enquiry_id}")
            else:
                row = rows.get(f"{VISIT_ROW_OF_ALERT.get(alert.kind)}.v{alert.visit_id}")
            if row is not None and (alert.visit_id or alert.enquiry_id):
                row.alert_url = acknowledge
                row.detail = f"{row.detail} · {alert.get_kind_display()}: {raised}".lstrip(" ·")
                row.urgent = row.urgent or alert.severity == Severity.URGENT
                continue
            items.append(
                WorkItem(
                    key=f"alert.a{alert.pk}",
                    what=alert.get_kind_display(),
                    course=alert.course,
                    # An alert about an enquiry (no course) is on its site.
                    stock_site=alert.site,
                    subject="An enquiry" if alert.enquiry_id else "",
                    subject_url=(
                        reverse("admin:enquiries_enquiry_change", args=[alert.enquiry_id])
                        if alert.enquiry_id
                        else ""
                    ),
                    due=None,  # an alert is to read now; when it was raised is in the detail
                    action="Acknowledge",
                    url=acknowledge,
                    post=True,
                    detail=f"{raised} {alert.message}",
                    urgent=alert.severity == Severity.URGENT,
                )
            )
    assignments = WorkAssignment.objects.filter(
        key__in=[item.key for item in items]
    ).select_related("assigned_to")
    assigned = {assignment.key: assignment.assigned_to for assignment in assignments}
    for item in items:
        item.assigned_to = assigned.get(item.key)
    return sorted(items, key=_urgency)


def _enquiry_items(*, sites) -> list[WorkItem]:
    """Each open enquiry at the sites, with what its answers suggest (self-reported, never a
    decision) and, until it is first answered, when the answer is due: one query for the
    enquiries, two for their sites' default protocols."""
    enquiries = list(enquiries_open(sites=sites)[:ROWS_PER_KIND])
    protocols = sites_default_protocols({enquiry.site_id for enquiry in enquiries})
    items = []
    for enquiry in enquiries:
        change = reverse("admin:enquiries_enquiry_change", args=[enquiry.pk])
        suggestion = enquiry_suggestion(enquiry, protocol=protocols[enquiry.site_id])
        new = enquiry.status == EnquiryStatus.NEW
        items.append(
            WorkItem(
                key=f"enquiry.e{enquiry.pk}",
                what=f"Enquiry: {enquiry.get_kind_display().lower()}"
                + ("" if new else f" ({enquiry.get_status_display().lower()})"),
                course=None,
                stock_site=enquiry.site,
                subject=f"{enquiry.first_name} {enquiry.last_name}".strip(),
                subject_url=change,
                due=enquiry_answer_due(enquiry) if new else None,
                action="Answer" if new else "Open",
                url=change,
                detail=f"Sent {local_words(enquiry.submitted_at, enquiry.site.time_zone)}",
                note=suggestion.words,  # in full: the rule's own words
            )
        )
    return items


def _custody_since_release(kind: str):
    """The course's product has this custody event since its release, not voided since."""
    return Exists(
        CustodyEvent.objects.filter(
            course=OuterRef("pk"), kind=kind, at__gte=OuterRef("released_at")
        ).exclude(corrections__isnull=False)
    )


def _product_custody_items(*, sites, ship: bool, receive: bool) -> list[WorkItem]:
    """A released product to send to the site (the lab), and one sent to receive there (the
    site's staff): one query for both."""
    courses = (
        TreatmentCourse.objects.filter(
            site__in=sites,
            state__in=[CourseState.RELEASED, CourseState.TRANSPLANT_SCHEDULED],
            released_at__isnull=False,
        )
        .annotate(
            shipped=_custody_since_release(CustodyKind.SHIPPED_TO_SITE),
            received=_custody_since_release(CustodyKind.RECEIVED_AT_SITE),
            transplant_at=Subquery(
                Visit.objects.filter(
                    course=OuterRef("pk"), kind=VisitKind.TRANSPLANT, status=VisitStatus.BOOKED
                ).values("scheduled_at")[:1]
            ),
        )
        .filter(received=False)
        .select_related("patient", "site", "protocol")
        .order_by("released_at")
    )
    items = []
    for course in courses[:ROWS_PER_KIND]:
        step = "received_at_site" if course.shipped else "shipped_to_site"
        if (step == "shipped_to_site" and not ship) or (step == "received_at_site" and not receive):
            continue
        what = (
            "Receive the product at the site" if course.shipped else "Send the product to the site"
        )
        items.append(
            WorkItem(
                key=f"{step}.c{course.pk}",
                what=what,
                course=course,
                due=course.transplant_at,
                action="Scan and record",
                url=reverse("admin:pathway_treatmentcourse_custody", args=[course.pk, step]),
                detail=f"{course.coi_id}, released "
                f"{local_words(course.released_at, course.site.time_zone)}",
            )
        )
    return items


def _next_dose_slot():
    """When the chair slot held for a course's next dose starts."""
    return Subquery(
        Reservation.objects.filter(
            course=OuterRef("pk"),
            purpose=ReservationPurpose.INFUSION,
            visit__isnull=True,
            released_at__isnull=True,
        )
        .order_by("starts_at")
        .values("starts_at")[:1]
    )


def _unit_custody_items(*, sites, ship: bool, receive: bool) -> list[WorkItem]:
    """A dose's units to send from the stock to the site (the lab), and units sent to receive
    there (the site's staff): one query for both."""
    rows = (
        ProductUnit.objects.filter(
            course__site__in=sites, status__in=[UnitStatus.ALLOCATED, UnitStatus.SHIPPED]
        )
        .values("course_id", "status")
        .annotate(
            units=Count("pk"),
            infusion_at=Subquery(
                Visit.objects.filter(
                    course=OuterRef("course_id"),
                    kind=VisitKind.INFUSION,
                    status=VisitStatus.BOOKED,
                ).values("scheduled_at")[:1]
            ),
        )
        .order_by("infusion_at", "course_id")
    )[:ROWS_PER_KIND]
    rows = [
        row
        for row in rows
        if (ship and row["status"] == UnitStatus.ALLOCATED)
        or (receive and row["status"] == UnitStatus.SHIPPED)
    ]
    courses = TreatmentCourse.objects.select_related("patient", "site").in_bulk(
        {row["course_id"] for row in rows}
    )
    items = []
    for row in rows:
        course = courses[row["course_id"]]
        shipped = row["status"] == UnitStatus.SHIPPED
        step = "units_received" if shipped else "units_shipped"
        items.append(
            WorkItem(
                key=f"{step}.c{course.pk}",
                what="Receive the units at the site" if shipped else "Send the units to the site",
                course=course,
                due=row["infusion_at"],
                action="Scan and record",
                url=reverse("admin:pathway_treatmentcourse_custody", args=[course.pk, step]),
                detail=f"{row['units']} unit(s) of {course.coi_id}",
            )
        )
    return items


def _lot_items(*, sites, user) -> list[WorkItem]:
    """Lots in quarantine: their QC to enter (the lab), then their release to sign (another
    lab user: not the one who entered the QC)."""
    lots = (
        CellBankLot.objects.filter(site__in=sites, status=LotStatus.QUARANTINE)
        .select_related("site", "qc_recorded_by")
        .order_by("received_at")
    )
    items = []
    for lot in lots[:ROWS_PER_KIND]:
        change = reverse("admin:pathway_cellbanklot_change", args=[lot.pk])
        if not lot.qc_recorded:
            if not user.has_perm("pathway.change_cellbanklot"):
                continue
            items.append(
                WorkItem(
                    key=f"lot_qc.l{lot.pk}",
                    what="Enter the lot's QC",
                    course=None,
                    stock_site=lot.site,
                    subject=f"Lot {lot.lot_number}",
                    subject_url=change,
                    due=lot.received_at,
                    action="Enter QC",
                    url=change,
                    detail=f"{lot.units_received} units, expires {date_words(lot.expires_on)}",
                )
            )
        elif user.has_perm("pathway.release_lot") and lot.qc_recorded_by_id != user.pk:
            items.append(
                WorkItem(
                    key=f"lot_release.l{lot.pk}",
                    what="Sign the lot's release",
                    course=None,
                    stock_site=lot.site,
                    subject=f"Lot {lot.lot_number}",
                    subject_url=change,
                    due=lot.qc_recorded_at,
                    action="Sign the release",
                    url=reverse("admin:pathway_cellbanklot_release", args=[lot.pk]),
                    detail=f"QC entered by {lot.qc_recorded_by}",
                )
            )
    return items


def _consultation_items(*, sites, now: dt.datetime) -> list[WorkItem]:
    """Consultations booked for today or tomorrow in their site's calendar, and those whose
    time has passed, still to mark done or missed: one query (the two days' superset), the
    days told apart in each site's zone."""
    consultations = (
        Consultation.objects.filter(
            enquiry__site__in=sites,
            status=ConsultationStatus.BOOKED,
            scheduled_at__lt=now + dt.timedelta(days=2),
        )
        .select_related("enquiry__site")
        .order_by("scheduled_at")
    )
    items = []
    for consultation in consultations[:ROWS_PER_KIND]:
        site = consultation.enquiry.site
        tomorrow = timezone.localdate(now, site.time_zone) + dt.timedelta(days=1)
        if timezone.localdate(consultation.scheduled_at, site.time_zone) > tomorrow:
            continue
        enquiry = consultation.enquiry
        change = reverse("admin:enquiries_consultation_change", args=[consultation.pk])
        passed = consultation.scheduled_at <= now
        items.append(
            WorkItem(
                key=f"consultation.c{consultation.pk}",
                what=f"Consultation, {consultation.get_mode_display().lower()}"
                + (": mark it done or missed" if passed else ""),
                course=None,
                stock_site=site,
                subject=f"{enquiry.first_name} {enquiry.last_name}".strip() + " (enquiry)",
                subject_url=change,
                due=consultation.scheduled_at,
                action="Open",
                url=change,
                detail=consultation.video_link
                if consultation.mode == ConsultationMode.VIDEO
                else consultation.place,
            )
        )
    return items


def _urgency(item: WorkItem):
    """Urgent alerts first, then what is overdue, then by when it is due (undated last)."""
    due = item.due
    if due is None:
        moment = dt.datetime.max.replace(tzinfo=dt.UTC)
    elif isinstance(due, dt.datetime):
        moment = due
    else:
        moment = dt.datetime.combine(due, dt.time(23, 59), tzinfo=item.site.time_zone)
    return (not item.urgent, not item.overdue, moment)

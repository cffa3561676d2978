import datetime as dt
import json

import segno
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django_fsm import ConcurrentTransition
from django_fsm.admin import FSMAdminMixin, FSMTransitionContext

from common.admin_readonly import ReadOnlyAdmin
from common.admin_scoping import SiteScopedAdmin
from common.errors import Refused
from common.forms import SecondLook, errors_beside_fields, second_look_field
from common.numbers import cells_words
from common.paginator import EstimatedCountPaginator
from common.zones import date_words, local_words, respond_in_zone, zone_words
from pathway import admin_lots  # noqa: F401 (registers the cell bank's stock and the doses)
from pathway.amendments import follow_ups_recompute
from pathway.audit import audit_verify
from pathway.badges import state_badge
from pathway.chains import reservations_words
from pathway.coi import coi_id_canonical
from pathway.conditions import RuleStatus, eligibility_checklist, evaluation_sources
from pathway.custody import (
    MANUAL_KINDS,
    batch_record_cell_count,
    batch_record_qc,
    cell_count_errors,
    custody_event_errors,
    custody_event_record,
    custody_unusual_values,
    may_record_product_step,
    product_custody_refusals,
    units_custody_record,
    units_on_their_way,
    units_thaw_refusals,
)
from pathway.forecast import forecast_interval_words
from pathway.forms import ProductCustodyForm, UnitCustodyForm
from pathway.lots import stock_by_lot
from pathway.models import (
    TRANSITION_LABELS,
    Batch,
    BatchStatus,
    CellBankLot,
    CellCount,
    CustodyEvent,
    CustodyKind,
    LotStatus,
    ProductUnit,
    Protocol,
    ProtocolQcTest,
    ProtocolVisit,
    QcTestKind,
    TransitionLog,
    TreatmentCourse,
    UnitStatus,
)
from pathway.selectors import (
    batch_growth_forecast,
    batches_due_for_release,
    course_dosing_weight,
    course_evaluation_facts,
)
from pathway.services import (
    COURSE_TRANSITION_SERVICES,
    batch_release_refusals,
    course_create,
    course_next_infusion,
    course_open_refusal,
    protocol_follow_ups_copy,
    protocol_therapy_defaults,
    site_default_protocol,
)
from pathway.states import CourseState, Therapy
from patients.access import AUDITOR_GROUP, roles_allowed, user_sites
from patients.admin import ClinicalRecordsSavedThroughServices, CourseAdverseEventInline
from patients.admin_search import OffersCloseMatches
from patients.measures import unusual_values
from patients.search import patients_matching
from reporting.checkins import course_checkins
from reporting.outcomes import CHANGES, course_outcomes
from reporting.timeline import course_timeline
from scheduling.chains import follow_ups_proposal
from scheduling.models import Notification, ProtocolDeviation, Visit
from scheduling.services import follow_ups_book


class ProtocolVisitInline(admin.TabularInline):
    model = ProtocolVisit
    extra = 0


class ProtocolQcTestInline(admin.TabularInline):
    model = ProtocolQcTest
    extra = 0


class ProtocolAdminForm(forms.ModelForm):
    """A protocol added here takes its therapy's numbers where they were left as first shown
    (the model's, which are P63+'s), as `protocol_create` gives them."""

    def clean(self):
        cleaned = super().clean()
        if self.instance._state.adding and cleaned.get("therapy"):
            cleaned.update(
                protocol_therapy_defaults(therapy=cleaned["therapy"], given=self.changed_data)
            )
        return cleaned


@admin.register(Protocol)
class ProtocolAdmin(admin.ModelAdmin):
    form = ProtocolAdminForm
    actions = ["recompute_follow_ups"]

    def get_readonly_fields(self, request, obj=None):
        # Its courses follow its therapy's steps. A page opened before its first course still
        # sends the therapy: then the model's refusal (`Protocol.clean`) is shown by the field.
        fixed = obj is not None and "therapy" not in request.POST and obj.therapy_is_fixed()
        return (*super().get_readonly_fields(request, obj), *(("therapy",) if fixed else ()))

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if not change:  # after the inlines: follow-ups typed in are the protocol's own
            protocol_follow_ups_copy(protocol=form.instance)

    @admin.action(
        description="Move open follow-ups and reminders to the amended schedule",
        permissions=["change"],
    )
    def recompute_follow_ups(self, request, queryset):
        moved = sum(follow_ups_recompute(protocol=protocol) for protocol in queryset)
        self.message_user(request, f"{moved} open follow-up(s) moved.", messages.SUCCESS)

    list_display = (
        "name",
        "therapy",
        "is_default",
        "fev1_pct_min",
        "fev1_pct_max",
        "expansion_min_days",
        "expansion_max_days",
    )
    inlines = (ProtocolVisitInline, ProtocolQcTestInline)
    # Every editable field of the protocol (tests/test_admin.py fails when one is left out).
    fieldsets = (
        (None, {"fields": ("name", "is_default", "therapy", "default_at")}),
        (
            "Eligibility",
            {
                "fields": (
                    "eligibility_rules",
                    "fev1_pct_min",
                    "fev1_pct_max",
                    "smoking_quit_min_months",
                )
            },
        ),
        (
            "Cold chain",
            {"fields": ("cold_chain_min_c", "cold_chain_max_c", "cold_chain_max_transit_hours")},
        ),
        (
            "Expansion and release",
            {
                "fields": (
                    "expansion_min_days",
                    "expansion_max_days",
                    "min_viability_pct",
                    "min_identity_p63_pct",
                    "min_purity_pct",
                ),
            },
        ),
        (
            "Dose",
            {
                "description": "A new protocol takes its therapy's dose (SPEC's) wherever it "
                "is left as first shown.",
                "fields": (
                    "dose_min_million_per_kg",
                    "dose_max_million_per_kg",
                    "dose_target_million_per_kg",
                    "dosing_weight_max_age_days",
                ),
            },
        ),
        (
            "Infusions (MSC)",
            {
                "fields": (
                    "dose_count",
                    "dose_interval_days",
                    "follow_up_anchor",
                    "thaw_to_infusion_max_minutes",
                    "vitals_after_minutes",
                ),
            },
        ),
        (
            "Cell-bank lots (MSC)",
            {
                "fields": (
                    "min_positive_marker_pct",
                    "max_negative_marker_pct",
                    "max_endotoxin_eu_ml",
                    "max_storage_temperature_c",
                    "lot_expiry_warning_days",
                    "stock_lookahead_days",
                ),
            },
        ),
        (
            "Reminders and alerts",
            {
                "fields": (
                    "reminder_lead_days",
                    "harvest_notice_hours",
                    "transplant_notice_hours",
                    "infusion_notice_hours",
                    "consultation_notice_hours",
                    "quiet_hours_start",
                    "quiet_hours_end",
                    "whatsapp_quiet_hours_start",
                    "whatsapp_quiet_hours_end",
                    "transplant_booking_max_days",
                    "delivery_max_attempts",
                ),
            },
        ),
        (
            "What reminders tell patients",
            {
                "fields": (
                    "harvest_description",
                    "harvest_preparation",
                    "transplant_description",
                    "transplant_preparation",
                    "infusion_description",
                    "infusion_preparation",
                ),
            },
        ),
        (
            "Safety alerts",
            {
                "fields": (
                    "adverse_event_alert_grade",
                    "fev1_decline_alert_ml",
                    "dlco_decline_alert_pct",
                ),
            },
        ),
        ("What is entered", {"fields": ("expected_ranges",)}),
    )


class TransitionLogInline(admin.TabularInline):
    classes = ("collapse",)  # the course page opens on its state and next step
    model = TransitionLog
    fields = ("at", "transition", "source_state", "target_state", "by", "note")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "transition"
    verbose_name_plural = "history"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("by")


class VisitInline(admin.TabularInline):
    """Visits as the course sees them; they are moved or marked done on the visit's own page,
    through the services that keep their reminders right."""

    model = Visit
    fields = (
        "kind",
        "protocol_visit",
        "scheduled_at",
        "window_opens_on",
        "window_closes_on",
        "place",
        "status",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        # Each row names itself in its site's calendar: the course and site come with it.
        return super().get_queryset(request).select_related("protocol_visit", "course__site")


class CustodyEventInline(admin.TabularInline):
    """The course's chain of custody as a timeline; events are added, never edited."""

    classes = ("collapse",)  # the course page opens on its state and next step

    model = CustodyEvent
    fields = ("at", "kind", "coi_id", "location", "temperature_c", "by", "note", "corrects")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "chain of custody"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        # Each row names itself in its site's zone (a dose's units add rows: keep it constant).
        return super().get_queryset(request).select_related("by", "corrects", "course__site")


class DeviationInline(admin.TabularInline):
    """The course's protocol deviations: what the plan was, what was done, who said why."""

    classes = ("collapse",)  # the course page opens on its state and next step

    model = ProtocolDeviation
    fields = ("at", "kind", "visit", "detail", "reason", "by")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "protocol deviations"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("by", "visit__protocol_visit")


class AwaitingFilter(admin.SimpleListFilter):
    title = "awaiting"
    parameter_name = "awaiting"

    def lookups(self, request, model_admin):
        return [
            ("release", "Release (expanding, day 21 or later)"),
            ("transplant", "Transplant booking"),
        ]

    def queryset(self, request, queryset):
        if self.value() == "transplant":
            return queryset.filter(state=CourseState.RELEASED)
        if self.value() == "release":
            return queryset.filter(pk__in=batches_due_for_release().values("course_id"))
        return queryset


# Steps that end in a refusal or a rejection: what happened, and what the coordinator does next.
_SETBACKS = {
    "decline": ("Declined", "The patient is not eligible; the course is closed."),
    "reject_sample": (
        "Sample rejected",
        "The course is eligible again: book a re-harvest, or withdraw the course.",
    ),
    "fail_qc": (
        "QC failed",
        "The course is eligible again: book a re-harvest, or withdraw the course.",
    ),
}


def transition_outcome(log: TransitionLog, *, requested: str) -> tuple[int, str]:
    """The message for a step just taken: a warning saying what happened and what next when it
    ended in a refusal or a rejection (receiving a sample whose cold chain broke rejects it),
    else a success."""
    setback = _SETBACKS.get(log.transition)
    if setback is None:
        state = log.get_target_state_display().lower()
        return messages.SUCCESS, f"{TRANSITION_LABELS[requested]}: the course is now {state}."
    what, next_step = setback
    reason = log.note.strip()
    if reason and reason[-1] not in ".!?":
        reason += "."
    return messages.WARNING, f"{what}: {reason} {next_step}" if reason else f"{what}. {next_step}"


# Steps signed with a password: the service checks it as a login is checked.
SIGNED_STEPS = {"release", "record_transplant", "record_infusion"}

_STATUS_MARKS = {RuleStatus.PASSED: "✔", RuleStatus.FAILED: "✘", RuleStatus.OVERRIDDEN: "⚠"}


class ReferralForm(forms.ModelForm):
    """A new course: refused beside the patient when `course_create` would refuse it."""

    def clean_patient(self):
        patient = self.cleaned_data["patient"]
        refusal = course_open_refusal(patient=patient)
        if refusal:
            raise ValidationError(refusal)
        return patient


# The product's journey from the lab to the bedside, each a step of its own on the worklist.
PRODUCT_CUSTODY_STEPS = {
    "shipped_to_site": CustodyKind.SHIPPED_TO_SITE,
    "received_at_site": CustodyKind.RECEIVED_AT_SITE,
}
PRODUCT_CUSTODY_HELP = {
    CustodyKind.SHIPPED_TO_SITE: "The released product leaves the lab: scan its label as it goes.",
    CustodyKind.RECEIVED_AT_SITE: "The product arrives at the site: scan its label on receipt.",
}
# An infusion's units, from the cell bank's stock to the bedside: the same two steps, each
# unit's label scanned.
UNIT_CUSTODY_STEPS = {
    "units_shipped": CustodyKind.SHIPPED_TO_SITE,
    "units_received": CustodyKind.RECEIVED_AT_SITE,
    "units_thawed": CustodyKind.THAWED,
}
UNIT_CUSTODY_HELP = {
    CustodyKind.SHIPPED_TO_SITE: "The dose's units leave the stock for the site: scan each "
    "unit's label as it goes.",
    CustodyKind.RECEIVED_AT_SITE: "The dose's units arrive at the site: scan each unit's label "
    "on receipt.",
    CustodyKind.THAWED: "The dose's units are thawed for the infusion: scan each unit's label. "
    "A unit thawed and not given is discarded, never put back in stock.",
}


@admin.register(TreatmentCourse)
class TreatmentCourseAdmin(
    FSMAdminMixin,
    OffersCloseMatches,
    SiteScopedAdmin,
    ClinicalRecordsSavedThroughServices,
    admin.ModelAdmin,
):
    fsm_fields = ["state"]
    change_form_template = "admin/pathway/treatmentcourse/change_form.html"
    list_display = ("__str__", "site", "state_badge", "days_in_state", "coi_id", "referred_at")
    list_select_related = ("patient", "site")
    list_filter = ("state", AwaitingFilter, "site", "protocol")
    search_fields = ("patient__mrn", "patient__last_name", "coi_id")  # see get_search_results
    search_help_text = "Patient's name (any order), the start of an MRN, or a chain-of-identity id."
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    autocomplete_fields = ("patient",)
    readonly_fields = (
        "site",
        "state",
        "state_changed_at",
        "timeline",
        "coi_id",
        "label_link",
        "eligibility",
        "evaluation_started_at",
        "harvested_at",
        "harvest_operator",
        "lab_received_at",
        "expansion_day",
        "released_at",
        "viable_cells_released_words",
        "transplanted_at",
        "cells_administered_words",
        "discharged_at",
        "low_fev1_justification",
        "outcomes",
        "capacity",
        "messages_sent",
        "checkins",
        "product_allocated_at",
        "first_infused_at",
        "last_infused_at",
        "doses_words",
        "infusions_table",
    )
    inlines = (
        VisitInline,
        CustodyEventInline,
        DeviationInline,
        CourseAdverseEventInline,
        TransitionLogInline,
    )

    class Media:
        css = {"all": ("pathway/admin.css",)}

    def get_search_results(self, request, queryset, search_term):
        """As on the patient list (`patients_matching`), and a course's id read off a label."""
        if not search_term.strip():
            return queryset, False
        coi_id = coi_id_canonical(search_term)
        by_coi = Q(coi_id=coi_id) if coi_id else None
        return (
            patients_matching(queryset, search_term, path="patient__", or_exactly=by_coi),
            False,
        )

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return ((None, {"fields": ("patient", "protocol", "notes")}),)
        return (
            ("Pathway at a glance", {"fields": ("timeline",)}),
            ("Capacity held", {"fields": ("capacity",)}),
            (
                None,
                {
                    "fields": (
                        "patient",
                        "site",
                        "protocol",
                        "state",
                        "state_changed_at",
                        "coi_id",
                        "label_link",
                        "notes",
                    )
                },
            ),
            (
                "Eligibility",
                {
                    "fields": ("eligibility", "low_fev1_justification"),
                    # Open while it is being decided; folded away after.
                    "classes": ()
                    if obj.state in (CourseState.EVALUATION, CourseState.ELIGIBLE)
                    else ("collapse",),
                },
            ),
            ("Outcomes", {"fields": ("outcomes",), "classes": ("collapse",)}),
            (
                "Messages sent to the patient",
                {"fields": ("messages_sent",), "classes": ("collapse",)},
            ),
            ("Check-ins between visits", {"fields": ("checkins",), "classes": ("collapse",)}),
            self._procedures(obj),
        )

    def _procedures(self, obj):
        """What was done to the patient: the therapy's own steps."""
        if obj.protocol.therapy == Therapy.MSC:
            return (
                "Infusions",
                {
                    "fields": (
                        "evaluation_started_at",
                        "product_allocated_at",
                        "doses_words",
                        "first_infused_at",
                        "last_infused_at",
                        "infusions_table",
                    ),
                    "classes": ()
                    if obj.state
                    in (
                        CourseState.PRODUCT_ALLOCATED,
                        CourseState.INFUSION_SCHEDULED,
                        CourseState.INFUSED,
                    )
                    else ("collapse",),
                },
            )
        return (
            "Procedures",
            {
                "fields": (
                    "evaluation_started_at",
                    "harvested_at",
                    "harvest_operator",
                    "lab_received_at",
                    "expansion_day",
                    "released_at",
                    "viable_cells_released_words",
                    "transplanted_at",
                    "cells_administered_words",
                    "discharged_at",
                ),
                "classes": ("collapse",),
            },
        )

    @admin.display(description="doses given")
    def doses_words(self, obj):
        return f"{obj.doses_given} of {obj.protocol.dose_count}"

    @admin.display(description="doses")
    def infusions_table(self, obj):
        """Each dose: its units and lot, when it was thawed and started, what was given."""
        zone = obj.site.time_zone
        infusions = list(obj.infusions.prefetch_related("units__lot").order_by("dose_number"))
        if not infusions:
            return "None allocated yet."
        rows = []
        for infusion in infusions:
            units = list(infusion.units.all())
            thaw = (
                f"{round((infusion.started_at - infusion.thawed_at).total_seconds() / 60)} min"
                if infusion.given
                else "–"
            )
            rows.append(
                (
                    infusion.dose_number,
                    ", ".join(u.unit_id for u in units) or "–",
                    ", ".join(sorted({u.lot.lot_number for u in units})) or "–",
                    local_words(infusion.started_at, zone) if infusion.given else "not yet",
                    thaw,
                    cells_words(infusion.cells_given) if infusion.given else "–",
                )
            )
        return format_html(
            "<table><thead><tr><th>dose</th><th>units</th><th>lot</th><th>started</th>"
            "<th>thaw to start</th><th>cells given</th></tr></thead><tbody>{}</tbody></table>",
            format_html_join("", "<tr>" + "<td>{}</td>" * 6 + "</tr>", rows),
        )

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        if obj is not None:
            fields = (*fields, "patient", "protocol")
        return fields

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ReferralForm
        return super().get_form(request, obj, change, **kwargs)

    def get_queryset(self, request):
        # The course page's timeline, label and checklist read all three.
        return super().get_queryset(request).select_related("patient", "site", "protocol")

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        sites = list(user_sites(request.user)[:2])
        default = (
            site_default_protocol(site=sites[0])
            if len(sites) == 1
            else Protocol.objects.filter(is_default=True).first()
        )
        if default:
            initial.setdefault("protocol", default.pk)
        return initial

    def save_model(self, request, obj, form, change):
        """A referral goes through `course_create`, as from anywhere else; a change saves only
        the notes (every other field is read-only here)."""
        if change:
            return super().save_model(request, obj, form, change)
        created = course_create(
            patient=obj.patient, by=request.user, protocol=obj.protocol, note=obj.notes
        )
        obj.__dict__.update(created.__dict__)
        return None

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj):
        return state_badge(obj.state)

    @admin.display(description="")
    def timeline(self, obj):
        return render_to_string(
            "reporting/timeline.html", {"timeline": course_timeline(course=obj)}
        )

    @admin.display(description="last 12")
    def checkins(self, obj):
        rows = course_checkins(course=obj)
        if not rows:
            return "None asked yet."
        cells = "<tr>" + "<td>{}</td>" * 5 + "</tr>"
        body = format_html_join(
            "",
            cells,
            ((r.name, r.asked, r.status, r.score, r.change) for r in rows),
        )
        return format_html(
            "<table><thead><tr><th>questionnaire</th><th>asked</th><th>status</th>"
            "<th>score</th><th>change</th></tr></thead><tbody>{}</tbody></table>",
            body,
        )

    @admin.display(description="viable cells released")
    def viable_cells_released_words(self, obj):
        return cells_words(obj.viable_cells_released)

    @admin.display(description="cells administered")
    def cells_administered_words(self, obj):
        return cells_words(obj.cells_administered)

    @admin.display(description="last 20")
    def messages_sent(self, obj):
        """The patient's last reminders: channel, when (the site's time), and what became of
        each, so a coordinator can answer "did they get it?"."""
        notifications = list(
            Notification.objects.filter(patient=obj.patient)
            .select_related("visit__protocol_visit")
            .order_by("-send_after")[:20]
        )
        if not notifications:
            return "Nothing sent yet."
        zone = obj.site.time_zone
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    f"{local_words(n.sent_at or n.send_after, zone)}",
                    n.get_channel_display(),
                    n.visit.label if n.visit_id else n.get_template_display(),
                    n.get_status_display(),
                )
                for n in notifications
            ),
        )
        return format_html(
            "<table><thead><tr><th>when</th><th>by</th><th>about</th><th>status</th></tr>"
            "</thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="places ahead")
    def capacity(self, obj):
        held = list(
            obj.reservations.filter(released_at__isnull=True, starts_at__gt=timezone.now())
            .select_related("resource", "visit__protocol_visit")
            .order_by("starts_at")
        )
        words = reservations_words(held) if held else "Nothing ahead."
        if not follow_ups_proposal(course=obj):
            return words
        url = reverse("admin:pathway_treatmentcourse_follow_ups", args=[obj.pk])
        return format_html('{} <a class="button" href="{}">Book the follow-ups</a>', words, url)

    @admin.display(description="days in state", ordering="-state_changed_at")
    def days_in_state(self, obj):
        return obj.days_in_state

    @admin.display(description="expansion day")
    def expansion_day(self, obj):
        return obj.expansion_day if obj.state == CourseState.EXPANDING else "–"

    @admin.display(description="eligibility checklist")
    def eligibility(self, obj):
        facts = course_evaluation_facts(course=obj)
        checklist = eligibility_checklist(
            facts=facts, protocol=obj.protocol, low_fev1_justification=obj.low_fev1_justification
        )
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((_STATUS_MARKS[r.status], r.rule, r.reason) for r in checklist),
        )
        sources = evaluation_sources(facts, zone=obj.site.time_zone)
        return format_html(
            '<table class="eligibility-checklist">{}</table><p class="help">{}</p>', rows, sources
        )

    @admin.display(description="change from baseline")
    def outcomes(self, obj):
        rows = course_outcomes(course=obj)
        reported = next((r for r in course_checkins(course=obj) if r.change), None)
        by_patient = (
            format_html(
                "<p>mMRC as the patient reported it ({}): {}, {}.</p>",
                reported.asked,
                reported.score,
                reported.change,
            )
            if reported
            else ""
        )
        if not rows:
            return by_patient or "No follow-up measured yet."
        header = format_html_join("", "<th>{}</th>", ((m.label,) for m in CHANGES))
        body = format_html_join(
            "",
            "<tr><th>{}</th>{}</tr>",
            (
                (
                    row["visit"],
                    format_html_join(
                        "",
                        "<td>{}</td>",
                        (("–" if row[m] is None else f"{row[m]:+.1f}",) for m in CHANGES),
                    ),
                )
                for row in rows
            ),
        )
        return format_html(
            '<table class="course-outcomes"><tr><th></th>{}</tr>{}</table>{}',
            header,
            body,
            by_patient,
        )

    def get_urls(self):
        label = path(
            "<path:object_id>/label/",
            self.admin_site.admin_view(self.label_view),
            name="pathway_treatmentcourse_label",
        )
        follow_ups = path(
            "<path:object_id>/follow-ups/",
            self.admin_site.admin_view(self.follow_ups_view),
            name="pathway_treatmentcourse_follow_ups",
        )
        custody = path(
            "<path:object_id>/custody/<str:step>/",
            self.admin_site.admin_view(self.product_custody_view),
            name="pathway_treatmentcourse_custody",
        )
        return [label, follow_ups, custody, *super().get_urls()]

    def product_custody_view(self, request, object_id, step):
        """The product leaving the lab for the site ("shipped_to_site"), or arriving there
        ("received_at_site"), as a step of its own: the label scanned, the time with its
        zone and the temperature with its unit, prefilled with now and the place."""
        course = self.get_object(request, object_id)
        kind = PRODUCT_CUSTODY_STEPS.get(step) or UNIT_CUSTODY_STEPS.get(step)
        if kind is None:
            raise Http404("No such custody step.")
        if not request.user.has_perm("pathway.add_custodyevent") or not may_record_product_step(
            user=request.user, kind=kind
        ):
            raise PermissionDenied(
                f"“{CustodyKind(kind).label}” is not your role's to record: "
                f"{roles_allowed('add_custodyevent')}, and the step's own."
            )
        page = self._unit_custody_page if step in UNIT_CUSTODY_STEPS else self._product_custody_page
        return respond_in_zone(course.site.time_zone, lambda: page(request, course, kind))

    def _unit_custody_page(self, request, course, kind):
        zone = course.site.time_zone
        initial = {
            "at": timezone.localtime(timezone.now(), zone).replace(second=0, microsecond=0),
            "location": course.site.name,
        }
        data = request.POST if request.method == "POST" else None
        form = UnitCustodyForm(
            data=data, initial=initial, course=course, user=request.user, kind=kind
        )
        if data is not None and form.is_valid():
            try:
                events = units_custody_record(
                    course=course,
                    kind=kind,
                    by=request.user,
                    scanned_unit_ids=form.cleaned_data["scanned_unit_ids"],
                    at=form.cleaned_data["at"],
                    location=form.cleaned_data["location"],
                    temperature_c=form.cleaned_data.get("temperature_c"),
                    note=form.cleaned_data.get("note", ""),
                    values_checked=form.cleaned_data["values_checked"],
                )
            except ValidationError as invalid:
                errors_beside_fields(form, invalid.message_dict)
            else:
                self.message_user(
                    request,
                    f"{CustodyKind(kind).label}: {len(events)} unit(s) of {course.coi_id}, "
                    f"{local_words(form.cleaned_data['at'], zone)}.",
                    messages.SUCCESS,
                )
                return redirect("admin:index")
        waiting = units_on_their_way(course=course, kind=kind)
        context = self.admin_site.each_context(request) | {
            "title": f"{CustodyKind(kind).label}: {course.patient}",
            "opts": self.model._meta,
            "original": course,
            "patient": course.patient,
            "zone_words": zone_words(zone),
            "transition": FSMTransitionContext(
                name=kind,
                label=CustodyKind(kind).label,
                help_text=f"{UNIT_CUSTODY_HELP[kind]} Waiting: "
                + (", ".join(u.unit_id for u in waiting) or "none")
                + ".",
            ),
            "transition_form": form,
        }
        return render(request, "pathway/transition_form.html", context)

    def _product_custody_page(self, request, course, kind):
        zone = course.site.time_zone
        place = settings.MANUFACTURING_FACILITY if kind == CustodyKind.SHIPPED_TO_SITE else ""
        initial = {
            "at": timezone.localtime(timezone.now(), zone).replace(second=0, microsecond=0),
            "location": place or course.site.name,
        }
        refusals = product_custody_refusals(course=course, kind=kind, by=request.user)
        data = request.POST if request.method == "POST" and not refusals else None
        form = ProductCustodyForm(data=data, initial=initial, course=course, user=request.user)
        for refusal in refusals:  # shown, with nothing to submit
            self.message_user(request, refusal, messages.ERROR)
        if data is not None and form.is_valid():
            try:
                custody_event_record(
                    course=course,
                    kind=kind,
                    by=request.user,
                    scanned_coi_id=form.cleaned_data["scanned_coi_id"],
                    at=form.cleaned_data["at"],
                    location=form.cleaned_data["location"],
                    temperature_c=form.cleaned_data.get("temperature_c"),
                    note=form.cleaned_data.get("note", ""),
                    values_checked=form.cleaned_data["values_checked"],
                )
            except ValidationError as invalid:
                errors_beside_fields(form, invalid.message_dict)
            else:
                self.message_user(
                    request,
                    f"{CustodyKind(kind).label}: recorded for {course.coi_id}, "
                    f"{local_words(form.cleaned_data['at'], zone)}.",
                    messages.SUCCESS,
                )
                return redirect("admin:index")
        context = self.admin_site.each_context(request) | {
            "title": f"{CustodyKind(kind).label}: {course.patient}",
            "opts": self.model._meta,
            "original": course,
            "patient": course.patient,
            "zone_words": zone_words(zone),
            "transition": FSMTransitionContext(
                name=kind, label=CustodyKind(kind).label, help_text=PRODUCT_CUSTODY_HELP[kind]
            ),
            "transition_form": form,
        }
        return render(request, "pathway/transition_form.html", context)

    def follow_ups_view(self, request, object_id):
        """ "Book all the follow-ups": the earliest free clinic slot in each one's window,
        shown for the coordinator to confirm (or leave out) and booked together."""
        course = self.get_object(request, object_id)
        if course is None or not self.has_view_permission(request, course):
            raise Http404("No such course here.")
        if not request.user.has_perm("scheduling.change_visit"):
            raise PermissionDenied(
                f"Booking follow-ups is not in your role: {roles_allowed('change_visit')}."
            )
        zone = course.site.time_zone
        return respond_in_zone(zone, lambda: self._follow_ups_page(request, course, zone))

    def _follow_ups_page(self, request, course, zone):
        proposal = follow_ups_proposal(course=course)
        if request.method == "POST":
            picks = {
                visit.pk: slot.starts_at
                for visit, slot in proposal
                if slot
                and request.POST.get(f"at_{visit.pk}") == slot.starts_at.isoformat()
                and str(visit.pk) in request.POST.getlist("book")
            }
            ticked = [pk for pk in request.POST.getlist("book") if pk.isdecimal() and len(pk) < 12]
            stale = [pk for pk in ticked if int(pk) not in picks]
            try:
                if stale:
                    raise Refused(["A slot shown has been taken meanwhile: here is a new set."])
                if not picks:
                    raise Refused(["Tick at least one follow-up to book."])
                booked = follow_ups_book(course=course, by=request.user, picks=picks)
            except Refused as refusal:
                for reason in refusal.reasons:
                    self.message_user(request, f"Nothing was booked: {reason}", messages.ERROR)
                proposal = follow_ups_proposal(course=course)
            else:
                self.message_user(
                    request,
                    "Booked: "
                    + "; ".join(f"{v.label} {local_words(v.scheduled_at, zone)}" for v in booked)
                    + ". The patient is reminded of each.",
                    messages.SUCCESS,
                )
                return redirect("admin:pathway_treatmentcourse_change", object_id=course.pk)
        rows = [
            {
                "visit": visit,
                "slot": slot,
                "when": timezone.localtime(slot.starts_at, zone) if slot else None,
                "value": slot.starts_at.isoformat() if slot else "",
            }
            for visit, slot in proposal
        ]
        context = self.admin_site.each_context(request) | {
            "title": f"Book the follow-ups of {course}",
            "opts": self.model._meta,
            "original": course,
            "rows": rows,
        }
        return render(request, "pathway/follow_ups.html", context)

    def label_view(self, request, object_id):
        """A printable label for the sample and the product: the id and its 2D code, the
        patient's identifiers for the bedside check, and nothing about the diagnosis."""
        course = self.get_object(request, object_id)
        if course is None or not self.has_view_permission(request, course) or not course.coi_id:
            raise Http404("No labelled course here.")
        # The product's first day: its harvest, or (a cell bank's units) their allocation.
        first = course.harvested_at or course.product_allocated_at
        harvested_on = timezone.localdate(first, course.site.time_zone) if first else None
        return render(
            request,
            "pathway/label.html",
            {
                "course": course,
                "patient": course.patient,
                "harvested_on": harvested_on,
                "dated": "Collected" if course.harvested_at else "Allocated",
                "code": segno.make(course.coi_id, error="m").svg_inline(scale=4, border=2),
            },
        )

    @admin.display(description="label")
    def label_link(self, obj):
        if not obj.coi_id:
            return "Issued at the first harvest."
        url = reverse("admin:pathway_treatmentcourse_label", args=[obj.pk])
        return format_html('<a href="{}" target="_blank">Print the label</a>', url)

    # Times in transition forms and on this page are the course's site's local times.

    def change_view(self, request, object_id, form_url="", extra_context=None):
        course = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if course is not None:  # the timeline below says the next step in words
            extra["primary_transition"] = course.pathway.next_step.get(course.state)
            # Units at the site may be thawed ahead of the bedside (the infusion form records
            # a thaw too): the step is offered where the units are.
            if (
                may_record_product_step(user=request.user, kind=CustodyKind.THAWED)
                and request.user.has_perm("pathway.add_custodyevent")
                and not units_thaw_refusals(course=course)
                and ProductUnit.objects.filter(course=course, status=UnitStatus.RECEIVED).exists()
            ):
                extra["units_thaw_url"] = reverse(
                    "admin:pathway_treatmentcourse_custody", args=[course.pk, "units_thawed"]
                )
        return super().change_view(request, object_id, form_url, extra)

    def fsm_transition_view(self, request, object_id, transition_name, **kwargs):
        """django-fsm-2's transition form page, with the form given the course and the user,
        so that it offers only what the service will accept (the right second persons)."""
        course = self.get_object(request, object_id)
        if transition_name not in TRANSITION_LABELS:
            raise Http404("No such step.")
        transition = self._get_fsm_transition_by_name(obj=course, transition_name=transition_name)
        if not transition.has_perm(course, user=request.user):
            # The form is not shown either: it would show what only the step's role may see.
            raise PermissionDenied(
                f"You may not {TRANSITION_LABELS[transition_name].lower()} a course: "
                f"{roles_allowed(f'{transition_name}_course')}."
            )
        form_class = self.get_fsm_transition_form(transition)
        if form_class is None:
            raise Http404("This step has no form.")
        with timezone.override(course.site.time_zone):
            data = request.POST if request.method == "POST" else None
            form = form_class(data=data, course=course, user=request.user)
            if (
                request.method == "POST"
                and form.is_valid()
                and self._apply_fsm_transition(
                    obj=course,
                    transition_name=transition_name,
                    request=request,
                    kwargs=form.cleaned_data,
                    form=form,
                )
            ):
                return redirect("admin:pathway_treatmentcourse_change", object_id=course.pk)
            if form.errors:  # the page opens on the first field to correct
                first = next((name for name in form.errors if name in form.fields), None)
                if first:
                    form.fields[first].widget.attrs["autofocus"] = True
            label = self.get_fsm_label(transition)
            return render(
                request,
                "pathway/transition_form.html",
                self.admin_site.each_context(request)
                | {
                    "title": f"{label}: {course.patient}",
                    "opts": self.model._meta,
                    "original": course,
                    "patient": course.patient,
                    "zone_words": zone_words(course.site.time_zone),
                    "transition": FSMTransitionContext(
                        name=transition_name,
                        label=label,
                        help_text=self.get_help_text(transition),
                    ),
                    "transition_form": form,
                    **self._what_is_decided(course, transition_name),
                },
            )

    def _what_is_decided(self, course, transition_name) -> dict:
        """What the person deciding or signing must see beside the form."""
        if transition_name == "approve":
            return {"checklist": self.eligibility(course)}
        if transition_name == "release":
            batch = course.batches.filter(status=BatchStatus.EXPANDING).first()
            if batch is None:
                return {}
            protocol, weight = course.protocol, course_dosing_weight(course=course)
            return {
                "release": {
                    "batch": batch,
                    "protocol": protocol,
                    "weight_kg": weight.weight_kg if weight else None,
                    "minimum_cells": (
                        int(protocol.dose_min_million_per_kg * weight.weight_kg * 1_000_000)
                        if weight
                        else None
                    ),
                    "extra": [
                        (test, batch.extra_qc_results.get(test.name))
                        for test in protocol.qc_tests.all()
                    ],
                    "refusals": batch_release_refusals(batch=batch, course=course),
                }
            }
        if transition_name == "record_transplant":
            protocol = course.protocol
            return {
                "transplant": {
                    "released_cells": course.viable_cells_released,
                    "dose_min": protocol.dose_min_million_per_kg,
                    "dose_max": protocol.dose_max_million_per_kg,
                }
            }
        if transition_name in ("allocate_product", "schedule_infusion", "record_infusion"):
            return {"infusion": self._dose_words(course, transition_name)}
        return {}

    @staticmethod
    def _dose_words(course, transition_name) -> dict:
        """The dose being allocated, booked or given: its units and what the protocol allows."""
        protocol = course.protocol
        infusion = course_next_infusion(course)
        units = list(infusion.units.select_related("lot")) if infusion else []
        weight = course_dosing_weight(course=course)
        lots = stock_by_lot(
            lots=CellBankLot.objects.filter(
                site=course.site, protocol=protocol, status=LotStatus.RELEASED
            ),
            today=timezone.localdate(timezone=course.site.time_zone),
        ).order_by("expires_on")
        return {
            "dose": infusion.dose_number if infusion else course.doses_given + 1,
            "doses": protocol.dose_count,
            "interval": protocol.dose_interval_days,
            "units": units,
            "cells": sum(u.lot.cells_per_unit for u in units),
            "dose_min": protocol.dose_min_million_per_kg,
            "dose_max": protocol.dose_max_million_per_kg,
            "target": protocol.dose_target_million_per_kg,
            "weight_kg": weight.weight_kg if weight else None,
            "thaw_minutes": protocol.thaw_to_infusion_max_minutes,
            "lots": list(lots) if transition_name != "record_infusion" else [],
        }

    def _apply_fsm_transition(self, *, obj, transition_name, request, kwargs=None, form=None):
        """Route every admin transition through the same service as commands and tasks. A
        refusal of a step with a form is shown on the form, all of it at once, each reason
        beside the field it is about."""
        service = COURSE_TRANSITION_SERVICES.get(transition_name)
        label = TRANSITION_LABELS.get(transition_name, transition_name)
        if service is None:
            self.message_user(request, f"Unknown step '{transition_name}'.", messages.ERROR)
            return False
        kwargs = dict(kwargs or {})
        if transition_name in SIGNED_STEPS:
            kwargs["request"] = request  # a signature's password counts like a login's
        try:
            log = service(course=obj, by=request.user, **kwargs)
        except Refused as refusal:
            beside = {}
            for field, reasons in refusal.by_field.items():
                if form is not None and field in form.fields:
                    beside[field] = reasons
            for field, reasons in beside.items():
                for reason in reasons:
                    form.add_error(field, reason)
            for reason in refusal.reasons:
                if not any(reason in reasons for reasons in beside.values()):
                    self.message_user(request, f"{label} refused: {reason}", messages.ERROR)
            return False
        except PermissionDenied as denied:
            self.message_user(request, str(denied), messages.ERROR)
            return False
        except ConcurrentTransition:
            self.message_user(
                request,
                "Someone else changed this course while you were working on it; it is now "
                f"{obj.get_state_display().lower()}. Nothing was saved: check it and try again.",
                messages.ERROR,
            )
            return False
        level, text = transition_outcome(log, requested=transition_name)
        self.message_user(request, text, level)
        return True


def _as_read(value, zone):
    """A step's recorded value with each moment in `zone`, named, and each day in words, at
    any depth (an eligibility checklist's values too)."""
    if isinstance(value, dict):
        return {key: _as_read(item, zone) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_read(item, zone) for item in value]
    if not isinstance(value, str):
        return value
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        return local_words(moment, zone)
    return date_words(moment.date()) if len(value) == 10 else value


@admin.register(TransitionLog)
class TransitionLogAdmin(ReadOnlyAdmin, SiteScopedAdmin, admin.ModelAdmin):
    list_display = ("at", "course", "transition", "source_state", "target_state", "by")
    list_select_related = ("course__patient", "by")
    fields = ("course", "transition", "source_state", "target_state", "by", "at", "note")
    readonly_fields = (*fields, "recorded")

    def get_fields(self, request, obj=None):
        return (*self.fields, "recorded")

    @admin.display(description="what was recorded")
    def recorded(self, obj):
        """The step's data as a person reads it: each moment in the site's zone, named (the
        row itself keeps them in ISO 8601, UTC, as the audit chain hashed them)."""
        zone = obj.course.site.time_zone
        rows = []
        for key, value in (obj.data or {}).items():
            value = _as_read(value, zone)
            if not isinstance(value, str | int | float):
                value = json.dumps(value, ensure_ascii=False, default=str)
            rows.append((key.replace("_", " "), value))
        if not rows:
            return "–"
        return format_html_join("", "<div><strong>{}</strong>: {}</div>", rows)

    list_filter = ("transition", "target_state")
    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def get_urls(self):
        verify = path(
            "verify/",
            self.admin_site.admin_view(self.verify_view),
            name="pathway_audit_verify",
        )
        return [verify, *super().get_urls()]

    @staticmethod
    def _may_verify(user) -> bool:
        return user.is_superuser or user.groups.filter(name=AUDITOR_GROUP).exists()

    def changelist_view(self, request, extra_context=None):
        extra = (extra_context or {}) | {"may_verify": self._may_verify(request.user)}
        return super().changelist_view(request, extra)

    def verify_view(self, request):
        """What `manage.py audit_verify` does, for an auditor in the admin. Auditors only: it
        reads every site's rows, and at a national programme's size takes seconds."""
        if not self._may_verify(request.user):
            raise PermissionDenied("Only auditors verify the audit trail.")
        context = self.admin_site.each_context(request) | {
            "title": "Verify the audit trail",
            "reports": audit_verify(),
            "opts": self.model._meta,
        }
        return render(request, "pathway/audit_verify.html", context)


class DueForReleaseFilter(admin.SimpleListFilter):
    title = "release"
    parameter_name = "due"

    def lookups(self, request, model_admin):
        return [("yes", "Due for release (day 21 or later)")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(pk__in=batches_due_for_release().values("pk"))
        return queryset


QC_MEASURES = (
    "identity_p63_pct",
    "purity_pct",
    "sterility_negative",
    "viability_pct",
    "viable_cells",
)
_PASS_FAIL_CHOICES = (("", "Not recorded"), ("passed", "Passed"), ("failed", "Failed"))


class BatchQcForm(SecondLook, forms.ModelForm):
    """The batch's QC results: the four measures and one field per extra test the protocol
    defines. Refused input is shown beside its field and nothing is saved; a result outside
    the protocol's expected range is saved only once it is typed again."""

    qc_tests: tuple = ()
    second_look = second_look_field()

    class Meta:
        model = Batch
        fields = QC_MEASURES

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in QC_MEASURES:
            if name in self.fields:
                self.fields[name].required = name != "sterility_negative"
        recorded = self.instance.extra_qc_results or {}
        for test in self.qc_tests:
            key = f"qc_test_{test.pk}"
            if key not in self.fields:
                continue
            result = recorded.get(test.name)
            if test.kind == QcTestKind.PASS_FAIL:
                self.fields[key].initial = {True: "passed", False: "failed"}.get(result, "")
            else:
                self.fields[key].initial = result

    @classmethod
    def for_tests(cls, tests) -> type:
        """This form with a field for each of `tests`."""
        fields = {}
        for test in tests:
            label, help_text = test.name, f"Release needs: {test.specification}."
            if test.kind == QcTestKind.PASS_FAIL:
                field = forms.ChoiceField(
                    label=label, choices=_PASS_FAIL_CHOICES, required=False, help_text=help_text
                )
            else:
                field = forms.DecimalField(
                    label=f"{label} ({test.unit})" if test.unit else label,
                    max_digits=12,
                    decimal_places=3,
                    required=False,
                    help_text=help_text,
                )
            fields[f"qc_test_{test.pk}"] = field
        return type("BatchQcForm", (cls,), {**fields, "qc_tests": tuple(tests)})

    def clean(self):
        data = super().clean()
        if self.instance.pk and self.instance.status != BatchStatus.EXPANDING:
            raise ValidationError(
                "QC can only be recorded while the batch is expanding, not "
                f"{self.instance.get_status_display().lower()}."
            )
        if self.instance.pk:
            changed = [name for name in Batch.measured_fields if name in self.changed_data]
            unusual = unusual_values(
                data,
                keys={name: Batch.measured_fields[name] for name in changed},
                expected=self.instance.course.protocol.expected_ranges,
            )
            self.take_second_look(unusual)
        return data

    def extra_qc_results(self) -> dict:
        """The extra tests' results as the batch stores them; a test left empty is left out."""
        results = {}
        for test in self.qc_tests:
            value = self.cleaned_data.get(f"qc_test_{test.pk}")
            if value in (None, ""):
                continue
            results[test.name] = (
                value == "passed" if test.kind == QcTestKind.PASS_FAIL else str(value)
            )
        return results


class CellCountForm(SecondLook, forms.ModelForm):
    """A count: impossible numbers refused beside their field, unusual ones typed again."""

    second_look = second_look_field()

    def clean(self):
        data = super().clean()
        if self.has_changed():
            unusual = unusual_values(
                data,
                keys=CellCount.measured_fields,
                expected=self.instance.batch.course.protocol.expected_ranges,
            )
            self.take_second_look(unusual)
        return data


class CellCountFormSet(forms.BaseInlineFormSet):
    def clean(self):
        super().clean()
        for form in self.forms:
            if form.cleaned_data and not form.cleaned_data.get("DELETE"):
                for error in cell_count_errors(
                    batch=self.instance, counted_at=form.cleaned_data.get("counted_at")
                ):
                    form.add_error("counted_at", error)


class CellCountInline(admin.TabularInline):
    """In-process counts, entered by the lab; the growth forecast above fits them."""

    model = CellCount
    form = CellCountForm
    formset = CellCountFormSet
    fields = ("second_look", "counted_at", "total_cells", "viability_pct", "by")
    readonly_fields = ("by",)
    extra = 1
    can_delete = False

    def has_change_permission(self, request, obj=None):
        return False  # a count is a measurement: a wrong one is followed by a right one

    def has_add_permission(self, request, obj=None):
        expanding = obj is not None and obj.status == BatchStatus.EXPANDING
        return expanding and super().has_add_permission(request, obj)


def forecast_text(forecast) -> str:
    """A growth forecast in words, for the batch page and the timeline."""
    if forecast is None:
        return "No forecast yet: it needs three counts of a growing culture."
    return (
        f"{forecast.target_cells / 1e6:.0f} × 10⁶ viable cells on day {forecast.day:.0f} "
        f"(90 % interval: {forecast_interval_words(forecast)}); doubling every "
        f"{forecast.doubling_days:.1f} days, from {forecast.counts} counts."
    )


@admin.register(Batch)
class BatchAdmin(SiteScopedAdmin, admin.ModelAdmin):
    """Batches in manufacturing: the lab enters QC here; release is signed on the course."""

    list_display = (
        "coi_id",
        "course",
        "status_column",
        "expansion_day_column",
        "viable_cells_column",
        "qc_recorded_by",
        "released_by",
    )
    list_select_related = ("course__patient", "course__site", "qc_recorded_by", "released_by")
    list_filter = ("status", DueForReleaseFilter, "course__site")
    search_fields = ("=coi_id",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    readonly_fields = (
        "course",
        "coi_id",
        "collected_at",
        "received_at",
        "temperature_c",
        "transit_hours",
        "status",
        "expansion_day_column",
        "qc_recorded_by",
        "qc_recorded_at",
        "released_by",
        "released_at",
        "release_meaning",
        "growth_forecast",
    )
    inlines = (CellCountInline,)
    fieldsets = (
        (None, {"fields": ("course", "coi_id", "status", "expansion_day_column")}),
        ("Growth forecast", {"fields": ("growth_forecast",)}),
        ("Sample", {"fields": ("collected_at", "received_at", "temperature_c", "transit_hours")}),
        (
            "QC results",
            {
                "fields": (
                    "identity_p63_pct",
                    "purity_pct",
                    "sterility_negative",
                    "viability_pct",
                    "viable_cells",
                    "qc_recorded_by",
                    "qc_recorded_at",
                    "second_look",
                ),
            },
        ),
        ("Release", {"fields": ("released_by", "released_at", "release_meaning")}),
    )
    form = BatchQcForm

    @admin.display(description="viable cells", ordering="viable_cells")
    def viable_cells_column(self, obj):
        return cells_words(obj.viable_cells) if obj.viable_cells is not None else "–"

    def _qc_tests(self, obj) -> list:
        return list(obj.course.protocol.qc_tests.all()) if obj is not None else []

    def get_fieldsets(self, request, obj=None):
        tests = self._qc_tests(obj)
        if not tests:
            return self.fieldsets
        extra = [f"qc_test_{test.pk}" for test in tests]
        if obj.status != BatchStatus.EXPANDING:
            extra = ["extra_qc_results"]
        return (
            *self.fieldsets[:3],
            ("Extra QC tests of the protocol", {"fields": extra}),
            self.fieldsets[3],
        )

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = BatchQcForm.for_tests(self._qc_tests(obj))
        return super().get_form(request, obj, change, **kwargs)

    @admin.display(description="expansion day")
    def expansion_day_column(self, obj):
        return obj.expansion_day if obj.status == BatchStatus.EXPANDING else "–"

    @admin.display(description="target dose reached")
    def growth_forecast(self, obj):
        return forecast_text(batch_growth_forecast(batch=obj))

    def save_formset(self, request, form, formset, change):
        """Counts go through the service, which checks them and alerts on slow growth."""
        if formset.model is not CellCount:
            return super().save_formset(request, form, formset, change)
        for count in formset.save(commit=False):
            batch_record_cell_count(
                batch=form.instance,
                by=request.user,
                counted_at=count.counted_at,
                total_cells=count.total_cells,
                viability_pct=count.viability_pct,
                values_checked=True,  # its form has asked for any unusual one typed again
            )
        return None

    @admin.display(description="status", ordering="status")
    def status_column(self, obj):
        if obj.status == BatchStatus.EXPANDING and obj.course.state == CourseState.ON_HOLD:
            return "Expanding (course on hold)"
        return obj.get_status_display()

    def has_add_permission(self, request):
        return False  # a batch starts when the lab receives the sample

    def has_delete_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.status != BatchStatus.EXPANDING:
            return [f.name for f in Batch._meta.fields] + [
                "expansion_day_column",
                "growth_forecast",
            ]
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        """QC goes through the service that logs it in the chain of custody. The form has
        checked what the service checks, so a refusal here is a race: it is raised, not
        shown as a success."""
        batch_record_qc(
            batch=Batch.objects.select_related("course__protocol", "course__site").get(pk=obj.pk),
            by=request.user,
            **{name: form.cleaned_data[name] for name in QC_MEASURES},
            extra_qc_results=form.extra_qc_results(),
            values_checked=True,  # the form has asked for any unusual result typed again
        )


class CustodyEventForm(SecondLook, forms.ModelForm):
    """A hand-recorded custody event or correction. Its time is read as a local time at the
    chosen course's site (whichever zone the page was drawn in), and says so."""

    user = None  # who records it: `CustodyEventAdmin.get_form` says

    scanned_coi_id = forms.CharField(
        label="Chain-of-identity id on the label",
        max_length=30,
        help_text="Scan or type it from the label; it must be this course's.",
    )
    second_look = second_look_field()

    class Meta:
        model = CustodyEvent
        fields = ("course", "kind", "at", "location", "temperature_c", "note", "corrects")
        labels = {"temperature_c": "Temperature (°C)"}
        help_texts = {"at": "Local time at the course's site, in its own zone."}

    def clean(self):
        data = super().clean()
        course, at = data.get("course"), data.get("at")
        if course and at:
            wall = timezone.localtime(at).replace(tzinfo=None)
            data["at"] = self.instance.at = wall.replace(tzinfo=course.site.time_zone)
        if course and data.get("kind"):
            for field, message in custody_event_errors(
                course=course,
                kind=data["kind"],
                at=data.get("at"),
                scanned_coi_id=data.get("scanned_coi_id", ""),
                corrects=data.get("corrects"),
                temperature_c=data.get("temperature_c"),
            ).items():
                self.add_error(field, message)
            for refusal in product_custody_refusals(course=course, kind=data["kind"], by=self.user):
                self.add_error("kind", refusal)
            if not self.errors:
                self.take_second_look(
                    custody_unusual_values(course=course, temperature_c=data.get("temperature_c"))
                )
        return data


@admin.register(CustodyEvent)
class CustodyEventAdmin(SiteScopedAdmin, admin.ModelAdmin):
    """Custody events are appended, never changed: shipments and receipts are added here,
    with the id read off the label; mistakes are put right by a correction."""

    form = CustodyEventForm
    list_display = ("at", "kind", "coi_id", "location", "by", "corrects")
    list_select_related = ("by", "corrects")
    list_filter = ("kind",)
    search_fields = ("=coi_id",)
    autocomplete_fields = ("course",)
    raw_id_fields = ("corrects",)

    def get_fields(self, request, obj=None):
        if obj is None:
            return (
                "course",
                "kind",
                "scanned_coi_id",
                "at",
                "location",
                "temperature_c",
                "note",
                "corrects",
                "second_look",
            )
        return (
            "course",
            "kind",
            "coi_id",
            "at",
            "location",
            "temperature_c",
            "by",
            "note",
            "corrects",
            "recorded_at",
        )

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        form.user = request.user  # a class of this request's own
        if obj is None and "at" in form.base_fields:
            zones = "; ".join(
                f"{site.code}: {zone_words(site.time_zone)}" for site in user_sites(request.user)
            )
            form.base_fields["at"].help_text = f"Local time at the course's site ({zones})."
        return form

    def formfield_for_choice_field(self, db_field, request, **kwargs):
        if db_field.name == "kind":
            kwargs["choices"] = [(k.value, k.label) for k in MANUAL_KINDS]
        return super().formfield_for_choice_field(db_field, request, **kwargs)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        created = custody_event_record(
            course=obj.course,
            kind=obj.kind,
            by=request.user,
            scanned_coi_id=form.cleaned_data["scanned_coi_id"],
            at=form.cleaned_data["at"],
            location=obj.location,
            temperature_c=obj.temperature_c,
            note=obj.note,
            corrects=obj.corrects,
            values_checked=True,  # the form has asked for an unusual one typed again
        )
        obj.pk = created.pk

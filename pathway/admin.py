from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django_fsm import ConcurrentTransition
from django_fsm.admin import FSMAdminMixin

from pathway.conditions import RuleStatus, eligibility_checklist
from pathway.models import (
    TRANSITION_LABELS,
    Protocol,
    ProtocolVisit,
    TransitionLog,
    TreatmentCourse,
)
from pathway.outcomes import CHANGES, course_outcomes
from pathway.selectors import course_evaluation_facts
from pathway.services import COURSE_TRANSITION_SERVICES, TransitionRefused
from pathway.states import CourseState
from patients.admin import ClinicalRecordsSavedThroughServices, CourseAdverseEventInline
from scheduling.models import Visit


class ProtocolVisitInline(admin.TabularInline):
    model = ProtocolVisit
    extra = 0


@admin.register(Protocol)
class ProtocolAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "is_default",
        "fev1_pct_min",
        "fev1_pct_max",
        "expansion_min_days",
        "expansion_max_days",
    )
    inlines = (ProtocolVisitInline,)
    fieldsets = (
        (None, {"fields": ("name", "is_default")}),
        ("Eligibility", {"fields": ("fev1_pct_min", "fev1_pct_max", "smoking_quit_min_months")}),
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
        ("Dose", {"fields": ("dose_min_million_per_kg", "dose_max_million_per_kg")}),
        (
            "Reminders and alerts",
            {
                "fields": (
                    "reminder_lead_days",
                    "quiet_hours_start",
                    "quiet_hours_end",
                    "transplant_booking_max_days",
                    "delivery_max_attempts",
                ),
            },
        ),
    )


class TransitionLogInline(admin.TabularInline):
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
        return super().get_queryset(request).select_related("protocol_visit")


_STATUS_MARKS = {RuleStatus.PASSED: "✔", RuleStatus.FAILED: "✘", RuleStatus.OVERRIDDEN: "⚠"}


@admin.register(TreatmentCourse)
class TreatmentCourseAdmin(FSMAdminMixin, ClinicalRecordsSavedThroughServices, admin.ModelAdmin):
    fsm_fields = ["state"]
    list_display = ("__str__", "site", "state", "days_in_state", "coi_id", "referred_at")
    list_select_related = ("patient", "site")
    list_filter = ("state", "site", "protocol")
    search_fields = ("=patient__mrn", "patient__last_name", "=coi_id")
    autocomplete_fields = ("patient",)
    readonly_fields = (
        "site",
        "state",
        "state_changed_at",
        "coi_id",
        "eligibility",
        "evaluation_started_at",
        "harvested_at",
        "harvest_operator",
        "lab_received_at",
        "expansion_day",
        "released_at",
        "viable_cells_released",
        "transplanted_at",
        "cells_administered",
        "discharged_at",
        "low_fev1_justification",
        "outcomes",
    )
    inlines = (VisitInline, CourseAdverseEventInline, TransitionLogInline)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return ((None, {"fields": ("patient", "protocol", "notes")}),)
        return (
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
                        "notes",
                    )
                },
            ),
            ("Eligibility", {"fields": ("eligibility", "low_fev1_justification")}),
            ("Outcomes", {"fields": ("outcomes",)}),
            (
                "Procedures",
                {
                    "fields": (
                        "evaluation_started_at",
                        "harvested_at",
                        "harvest_operator",
                        "lab_received_at",
                        "expansion_day",
                        "released_at",
                        "viable_cells_released",
                        "transplanted_at",
                        "cells_administered",
                        "discharged_at",
                    ),
                },
            ),
        )

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        if obj is not None:
            fields = (*fields, "patient", "protocol")
        return fields

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        default = Protocol.objects.filter(is_default=True).first()
        if default:
            initial.setdefault("protocol", default.pk)
        return initial

    def save_model(self, request, obj, form, change):
        if not change:
            obj.site, obj.referred_by = obj.patient.site, request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="days in state", ordering="-state_changed_at")
    def days_in_state(self, obj):
        return obj.days_in_state

    @admin.display(description="expansion day")
    def expansion_day(self, obj):
        return obj.expansion_day if obj.state == CourseState.EXPANDING else "–"

    @admin.display(description="eligibility checklist")
    def eligibility(self, obj):
        checklist = eligibility_checklist(
            facts=course_evaluation_facts(course=obj),
            protocol=obj.protocol,
            low_fev1_justification=obj.low_fev1_justification,
        )
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((_STATUS_MARKS[r.status], r.rule, r.reason) for r in checklist),
        )
        return format_html('<table class="eligibility-checklist">{}</table>', rows)

    @admin.display(description="change from baseline")
    def outcomes(self, obj):
        rows = course_outcomes(course=obj)
        if not rows:
            return "No follow-up measured yet."
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
            '<table class="course-outcomes"><tr><th></th>{}</tr>{}</table>', header, body
        )

    # Times in transition forms and on this page are the course's site's local times.

    def change_view(self, request, object_id, form_url="", extra_context=None):
        course = self.get_object(request, object_id)
        with timezone.override(course.site.time_zone if course else None):
            return super().change_view(request, object_id, form_url, extra_context)

    def fsm_transition_view(self, request, object_id, transition_name, **kwargs):
        course = self.get_object(request, object_id)
        with timezone.override(course.site.time_zone if course else None):
            return super().fsm_transition_view(request, object_id, transition_name, **kwargs)

    def _apply_fsm_transition(self, *, obj, transition_name, request, kwargs=None):
        """Route every admin transition through the same service as commands and tasks."""
        service = COURSE_TRANSITION_SERVICES.get(transition_name)
        label = TRANSITION_LABELS.get(transition_name, transition_name)
        if service is None:
            self.message_user(request, f"Unknown step '{transition_name}'.", messages.ERROR)
            return False
        try:
            service(course=obj, by=request.user, **(kwargs or {}))
        except TransitionRefused as refusal:
            for reason in refusal.reasons:
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
        self.message_user(
            request,
            f"{label}: the course is now {obj.get_state_display().lower()}.",
            messages.SUCCESS,
        )
        return True


@admin.register(TransitionLog)
class TransitionLogAdmin(admin.ModelAdmin):
    list_display = ("at", "course", "transition", "source_state", "target_state", "by")
    list_select_related = ("course__patient", "by")
    list_filter = ("transition", "target_state")
    date_hierarchy = "at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

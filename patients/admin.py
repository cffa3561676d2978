import json

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, Q, Subquery
from django.forms.models import BaseInlineFormSet
from django.http import HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from common.admin_export import export_as_csv
from common.admin_scoping import ScopedChoices, SiteScopedAdmin
from common.forms import SecondLook, second_look_field
from common.paginator import EstimatedCountPaginator
from common.zones import date_words
from pathway.badges import state_badge
from pathway.coi import coi_id_canonical
from pathway.models import TreatmentCourse
from pathway.records import adverse_event_record, clinical_record_save
from pathway.selectors import patient_expected_ranges
from pathway.states import CourseState
from patients.access import user_sites
from patients.admin_search import OffersCloseMatches
from patients.clinical import ratio_display
from patients.models import (
    AdverseEvent,
    BodyMeasurement,
    ChestCT,
    ClinicalAssessment,
    ClinicHours,
    CReactiveProtein,
    LungFunctionTest,
    Medication,
    Patient,
    Site,
    SixMinuteWalkTest,
    SymptomScore,
)
from patients.search import patients_matching
from reporting.fhir import FHIR_JSON, fhir_bundle_for_patients, fhir_export_allowed
from scheduling.models import VisitStatus

# Every list can be exported as a coordinator has filtered it (site scoping included).
admin.site.add_action(export_as_csv)

CLINICAL_RECORD_MODELS = (
    BodyMeasurement,
    LungFunctionTest,
    SixMinuteWalkTest,
    SymptomScore,
    ChestCT,
    ClinicalAssessment,
    CReactiveProtein,
)


class ClinicalRecordsSavedThroughServices:
    """Inline records are saved by the services, which validate, alert and mark visits done;
    their warnings are shown to whoever entered them."""

    def save_formset(self, request, form, formset, change):
        if formset.model not in (*CLINICAL_RECORD_MODELS, AdverseEvent):
            return super().save_formset(request, form, formset, change)
        for record in formset.save(commit=False):
            if isinstance(record, AdverseEvent):
                adverse_event_record(event=record, by=request.user)
                continue
            early_reason = form.cleaned_data.get("deviation_reason", "")
            # Its row's form has taken the second look at any unusual value (MeasuredRecordForm).
            # Each thing said once a page: a visit's records all tell it is still open.
            told = request.__dict__.setdefault("_clinical_warnings", set())
            for warning in clinical_record_save(
                record=record, by=request.user, early_reason=early_reason, values_checked=True
            ):
                if warning not in told:
                    told.add(warning)
                    self.message_user(request, warning, messages.WARNING)
        return None


class ClinicHoursInline(admin.TabularInline):
    """When the site sees patients, in its own time zone: bookings outside need a reason."""

    model = ClinicHours
    extra = 0


@admin.register(Site)
class SiteAdmin(SiteScopedAdmin, admin.ModelAdmin):
    list_display = ("name", "code", "time_zone", "patient_facing_name")
    search_fields = ("name", "code")
    filter_horizontal = ("coordinators", "members")
    inlines = (ClinicHoursInline,)


class MeasuredRecordForm(SecondLook, forms.ModelForm):
    """A clinical record's row: an impossible value is refused beside its field; one possible
    but outside the protocol's expected range is saved only once it is typed again."""

    second_look = second_look_field()

    def clean(self):
        cleaned = super().clean()
        model = self._meta.model
        changed = [
            name
            for name in model.measured_fields
            if {name, *model.looked_at_together.get(name, ())} & set(self.changed_data)
        ]
        if changed:
            values = {name: cleaned.get(name) for name in model.measured_fields if name in cleaned}
            unusual = model(**values).unusual_values(
                patient_expected_ranges(patient_id=self.instance.patient_id)
            )
            self.take_second_look({name: unusual[name] for name in changed if name in unusual})
        return cleaned


class ClinicalRecordInline(ScopedChoices, admin.TabularInline):
    form = MeasuredRecordForm
    extra = 0
    can_delete = False  # a wrong value is corrected, not erased
    readonly_fields = ("visit", "entered_by", "entered_at")
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("entered_by", "visit__protocol_visit")


class BodyMeasurementInline(ClinicalRecordInline):
    model = BodyMeasurement
    fields = (
        "second_look",
        "taken_on",
        "weight_kg",
        "height_cm",
        "visit",
        "entered_by",
        "entered_at",
    )


class LungFunctionTestInline(ClinicalRecordInline):
    model = LungFunctionTest
    fields = (
        "second_look",
        "taken_on",
        "fev1_l",
        "fev1_pct_predicted",
        "fvc_l",
        "fvc_pct_predicted",
        "fev1_fvc",
        "gold_stage",
        "dlco",
        "dlco_pct_predicted",
        "tlc_pct_predicted",
        "visit",
        "entered_by",
    )
    readonly_fields = ("fev1_fvc", "gold_stage", *ClinicalRecordInline.readonly_fields)

    @admin.display(description="FEV1/FVC")
    def fev1_fvc(self, obj):
        return ratio_display(obj.fev1_fvc) if obj.pk else "–"

    @admin.display(description="GOLD")
    def gold_stage(self, obj):
        if not obj.pk:
            return "–"
        return obj.gold_stage or "no obstruction"


class SixMinuteWalkTestInline(ClinicalRecordInline):
    model = SixMinuteWalkTest
    fields = ("second_look", "taken_on", "distance_m", "visit", "entered_by")


class SymptomScoreInline(ClinicalRecordInline):
    model = SymptomScore
    fields = ("second_look", "taken_on", "mmrc", "cat", "visit", "entered_by")


class CReactiveProteinInline(ClinicalRecordInline):
    model = CReactiveProtein
    fields = ("second_look", "taken_on", "crp_mg_l", "visit", "entered_by")


class ChestCTInline(ClinicalRecordInline):
    model = ChestCT
    fields = (
        "second_look",
        "taken_on",
        "emphysema_present",
        "low_attenuation_pct",
        "findings",
        "visit",
        "entered_by",
    )


class ClinicalAssessmentInline(ClinicalRecordInline):
    model = ClinicalAssessment
    fields = (
        "taken_on",
        "fit_for_bronchoscopy",
        "active_respiratory_infection",
        "a1at_screening",
        "dyspnoea_despite_optimised_therapy",
        "fit_for_infusion",
        "entered_by",
    )


class MedicationInline(ScopedChoices, admin.TabularInline):
    model = Medication
    fields = ("name", "dose", "started_on", "stopped_on")
    extra = 0


class CourseStateFilter(admin.SimpleListFilter):
    title = "course state"
    parameter_name = "course_state"

    def lookups(self, request, model_admin):
        return CourseState.choices

    def queryset(self, request, queryset):
        if self.value():
            # A semi-join, not DISTINCT over the patients table.
            with_state = TreatmentCourse.objects.filter(
                state=self.value(), site__in=user_sites(request.user)
            ).values("patient_id")
            return queryset.filter(pk__in=with_state)
        return queryset


@admin.register(Patient)
class PatientAdmin(
    OffersCloseMatches, SiteScopedAdmin, ClinicalRecordsSavedThroughServices, admin.ModelAdmin
):
    def get_search_results(self, request, queryset, search_term):
        """Names in any order, MRN prefixes and course ids, all on indexes (`patients_matching`)."""
        if not search_term.strip():
            return queryset, False
        coi_id = coi_id_canonical(search_term)
        by_coi = (
            Q(Exists(TreatmentCourse.objects.filter(patient=OuterRef("pk"), coi_id=coi_id)))
            if coi_id
            else None
        )
        return patients_matching(queryset, search_term, or_exactly=by_coi), False

    list_display = (
        "mrn",
        "last_name",
        "first_name",
        "site",
        "date_of_birth",
        "coordinator",
        "latest_course",
    )
    list_select_related = ("site", "coordinator")
    list_filter = ("site", CourseStateFilter)
    search_fields = ("mrn", "last_name")  # the box; `get_search_results` does the search
    search_help_text = "Name (any order), the start of an MRN, or a chain-of-identity id."
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    readonly_fields = ("courses",)
    fieldsets = (
        (None, {"fields": ("site", "mrn", "first_name", "last_name", "date_of_birth", "sex")}),
        ("Treatment courses", {"fields": ("courses",)}),
        (
            "Contact and consent",
            {
                "fields": (
                    "email",
                    "phone",
                    "consent_email",
                    "consent_sms",
                    "whatsapp",
                    "consent_whatsapp",
                    "preferred_language",
                    "time_zone",
                ),
            },
        ),
        ("Smoking", {"fields": ("smoking_status", "smoking_quit_date")}),
        ("Care", {"fields": ("coordinator",)}),
    )
    inlines = (
        LungFunctionTestInline,
        SixMinuteWalkTestInline,
        SymptomScoreInline,
        CReactiveProteinInline,
        ChestCTInline,
        ClinicalAssessmentInline,
        BodyMeasurementInline,
        MedicationInline,
    )

    def get_inlines(self, request, obj):
        """A patient being added has no results yet: CRP is entered once they exist."""
        if obj is None:
            return [inline for inline in self.inlines if inline is not CReactiveProteinInline]
        return self.inlines

    actions = ("export_fhir_bundle",)

    class Media:
        css = {"all": ("pathway/admin.css",)}

    def get_queryset(self, request):
        # One subquery per listed row, on the courses' patient index, whatever the table size.
        # Only courses at the user's sites: a patient who moved shows nothing of the old one.
        latest = TreatmentCourse.objects.filter(
            patient=OuterRef("pk"), site__in=user_sites(request.user)
        ).order_by("-referred_at", "-pk")
        return (
            super()
            .get_queryset(request)
            .annotate(
                latest_course_state=Subquery(latest.values("state")[:1]),
                latest_course_since=Subquery(latest.values("state_changed_at")[:1]),
            )
        )

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        """The coordinator is chosen from the coordinators, in a plain select: a few names,
        and one a screen reader can name (the autocomplete widget's box cannot)."""
        if db_field.name == "coordinator":
            kwargs["queryset"] = (
                get_user_model()
                .objects.filter(groups__name="coordinator", is_active=True)
                .order_by("last_name", "first_name", "username")
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="")
    def courses(self, obj):
        """Links to the patient's courses at the patient's site (the one the user sees them
        at), newest first."""
        if obj is None or obj.pk is None:
            return "Add the patient first; then start a course from Treatment courses."
        courses = (
            TreatmentCourse.objects.filter(patient=obj, site=obj.site)
            .select_related("patient", "site")
            .order_by("-referred_at", "-pk")
        )
        if not courses:
            return "No course yet."
        return format_html_join(
            "",
            '<p><a href="{}">{}</a> {} since {}</p>',
            (
                (
                    reverse("admin:pathway_treatmentcourse_change", args=[course.pk]),
                    course,
                    state_badge(course.state),
                    date_words(timezone.localdate(course.state_changed_at, course.site.time_zone)),
                )
                for course in courses
            ),
        )

    @admin.display(description="course")
    def latest_course(self, obj):
        if obj.latest_course_state is None:
            return "–"
        days = (timezone.now() - obj.latest_course_since).days
        return format_html("{} {} d", state_badge(obj.latest_course_state), days)

    @admin.action(description="Export as FHIR R4 bundle", permissions=["fhir_export"])
    def export_fhir_bundle(self, request, queryset):
        bundle = fhir_bundle_for_patients(patients=queryset, sites=user_sites(request.user))
        response = HttpResponse(
            json.dumps(bundle, indent=2, ensure_ascii=False),
            content_type=f"{FHIR_JSON}; charset=utf-8",
        )
        response["Content-Disposition"] = 'attachment; filename="reporting.fhir.json"'
        return response

    def has_fhir_export_permission(self, request) -> bool:
        return fhir_export_allowed(user=request.user)


class VisitRecordFormSet(BaseInlineFormSet):
    """Measurements entered at a visit belong to that visit's patient, before validation."""

    def _construct_form(self, i, **kwargs):
        form = super()._construct_form(i, **kwargs)
        form.instance.patient_id = self.instance.course.patient_id
        return form


class VisitRecordInline(ScopedChoices, admin.TabularInline):
    form = MeasuredRecordForm
    formset = VisitRecordFormSet
    extra = 0
    can_delete = False
    readonly_fields = ("entered_by",)


class VisitLungFunctionInline(VisitRecordInline):
    model = LungFunctionTest

    def get_extra(self, request, obj=None, **kwargs):
        """A follow-up not yet measured opens with an empty row to fill."""
        if (
            obj is not None
            and obj.status == VisitStatus.BOOKED
            and not obj.lungfunctiontests.exists()
        ):
            return 1
        return 0

    fields = (
        "second_look",
        "taken_on",
        "fev1_l",
        "fev1_pct_predicted",
        "fvc_l",
        "fvc_pct_predicted",
        "dlco",
        "dlco_pct_predicted",
        "tlc_pct_predicted",
        "entered_by",
    )


class VisitWalkInline(VisitRecordInline):
    model = SixMinuteWalkTest
    fields = ("second_look", "taken_on", "distance_m", "entered_by")


class VisitSymptomInline(VisitRecordInline):
    model = SymptomScore
    fields = ("second_look", "taken_on", "mmrc", "cat", "entered_by")


class VisitCReactiveProteinInline(VisitRecordInline):
    model = CReactiveProtein
    fields = ("second_look", "taken_on", "crp_mg_l", "entered_by")


class VisitChestCTInline(VisitRecordInline):
    model = ChestCT
    fields = (
        "second_look",
        "taken_on",
        "emphysema_present",
        "low_attenuation_pct",
        "findings",
        "entered_by",
    )


class AdverseEventInline(ScopedChoices, admin.StackedInline):
    model = AdverseEvent
    fields = (
        ("onset_on", "grade", "serious"),
        ("related_to_procedure", "related_to_product", "outcome"),
        "description",
        "entered_by",
    )
    readonly_fields = ("entered_by",)
    extra = 0
    can_delete = False


class VisitAdverseEventFormSet(BaseInlineFormSet):
    def _construct_form(self, i, **kwargs):
        form = super()._construct_form(i, **kwargs)
        form.instance.patient_id = self.instance.course.patient_id
        form.instance.course_id = self.instance.course_id
        return form


class VisitAdverseEventInline(AdverseEventInline):
    formset = VisitAdverseEventFormSet
    fk_name = "visit"
    exclude = ("patient", "course")


class CourseAdverseEventFormSet(BaseInlineFormSet):
    def _construct_form(self, i, **kwargs):
        form = super()._construct_form(i, **kwargs)
        form.instance.patient_id = self.instance.patient_id
        return form


class CourseAdverseEventInline(AdverseEventInline):
    formset = CourseAdverseEventFormSet
    fk_name = "course"
    exclude = ("patient", "visit")


@admin.register(AdverseEvent)
class AdverseEventAdmin(SiteScopedAdmin, admin.ModelAdmin):
    list_display = ("onset_on", "patient", "grade", "serious", "related_to_product", "outcome")
    list_select_related = ("patient",)
    list_filter = ("grade", "serious", "related_to_procedure", "related_to_product", "outcome")
    search_fields = ("=patient__mrn", "description")
    readonly_fields = ("patient", "course", "visit", "entered_by", "entered_at")

    def has_add_permission(self, request):
        return False  # added from the course or visit page, so the alert rules apply

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        adverse_event_record(event=obj, by=request.user)

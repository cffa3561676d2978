from django.contrib import admin

from pathway.states import CourseState
from patients.models import (
    BodyMeasurement,
    ChestCT,
    ClinicalAssessment,
    LungFunctionTest,
    Patient,
    Site,
)


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ("name", "code", "time_zone")
    search_fields = ("name", "code")
    filter_horizontal = ("coordinators",)


class ClinicalRecordInline(admin.TabularInline):
    extra = 0
    readonly_fields = ("entered_by", "entered_at")
    show_change_link = True


class BodyMeasurementInline(ClinicalRecordInline):
    model = BodyMeasurement
    fields = ("taken_on", "weight_kg", "height_cm", "entered_by", "entered_at")


class LungFunctionTestInline(ClinicalRecordInline):
    model = LungFunctionTest
    fields = (
        "taken_on",
        "fev1_l",
        "fev1_pct_predicted",
        "fvc_l",
        "fev1_fvc",
        "gold_stage",
        "dlco_pct_predicted",
        "tlc_pct_predicted",
        "entered_by",
        "entered_at",
    )
    readonly_fields = ("fev1_fvc", "gold_stage", *ClinicalRecordInline.readonly_fields)

    @admin.display(description="FEV1/FVC")
    def fev1_fvc(self, obj):
        return obj.fev1_fvc if obj.pk else "–"

    @admin.display(description="GOLD")
    def gold_stage(self, obj):
        if not obj.pk:
            return "–"
        return obj.gold_stage or "no obstruction"


class ChestCTInline(ClinicalRecordInline):
    model = ChestCT
    fields = ("taken_on", "emphysema_present", "findings", "entered_by", "entered_at")


class ClinicalAssessmentInline(ClinicalRecordInline):
    model = ClinicalAssessment
    fields = (
        "taken_on",
        "fit_for_bronchoscopy",
        "active_respiratory_infection",
        "a1at_screening",
        "dyspnoea_despite_optimised_therapy",
        "entered_by",
        "entered_at",
    )


class CourseStateFilter(admin.SimpleListFilter):
    title = "course state"
    parameter_name = "course_state"

    def lookups(self, request, model_admin):
        return CourseState.choices

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(courses__state=self.value()).distinct()
        return queryset


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ("mrn", "last_name", "first_name", "site", "date_of_birth", "coordinator")
    list_select_related = ("site", "coordinator")
    list_filter = ("site", CourseStateFilter)
    search_fields = ("=mrn", "last_name", "first_name")
    autocomplete_fields = ("coordinator",)
    fieldsets = (
        (None, {"fields": ("site", "mrn", "first_name", "last_name", "date_of_birth", "sex")}),
        (
            "Contact and consent",
            {
                "fields": (
                    "email",
                    "phone",
                    "consent_email",
                    "consent_sms",
                    "preferred_language",
                    "time_zone",
                ),
            },
        ),
        ("Smoking", {"fields": ("smoking_status", "smoking_quit_date")}),
        ("Care", {"fields": ("coordinator",)}),
    )
    inlines = (
        BodyMeasurementInline,
        LungFunctionTestInline,
        ChestCTInline,
        ClinicalAssessmentInline,
    )

    def save_formset(self, request, form, formset, change):
        records = formset.save(commit=False)
        for record in records:
            if record.entered_by_id is None:
                record.entered_by = request.user
            record.save()
        for record in formset.deleted_objects:
            record.delete()
        formset.save_m2m()

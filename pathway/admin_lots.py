"""The cell bank's stock in the admin: lots received and QC'd by the lab, released by a second
lab user's signature, counted per site and lot; the units and the doses given, read only."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from common.admin_readonly import ReadOnlyAdmin
from common.admin_scoping import SiteScopedAdmin
from common.errors import Refused
from common.forms import SecondLook, second_look_field
from common.numbers import cells_words
from common.paginator import EstimatedCountPaginator
from common.zones import respond_in_zone, zone_words
from pathway.lots import (
    LOT_QC_FIELDS,
    LOT_RELEASE_MEANING,
    lot_expiring,
    lot_receipt_errors,
    lot_receive,
    lot_record_qc,
    lot_reject,
    lot_release,
    lot_release_refusals,
    stock_by_lot,
)
from pathway.models import (
    NEGATIVE_MARKERS,
    POSITIVE_MARKERS,
    CellBankLot,
    Infusion,
    LotStatus,
    ProductUnit,
    Protocol,
    VitalSigns,
)
from pathway.states import Therapy
from patients.access import roles_allowed, user_sites
from patients.measures import unusual_values

CERTIFICATE_FIELDS = (
    "lot_number",
    "protocol",
    "site",
    "bank",
    "tissue_source",
    "donor_code",
    "donor_eligibility_accepted_by",
    "donor_eligibility_accepted_on",
    "passage",
    "units_received",
    "cells_per_unit",
    "expires_on",
    "storage_temperature_c",
    "received_at",
)


class LotReceiptForm(SecondLook, forms.ModelForm):
    """A lot's certificate of analysis as it arrives, and its units' labels. Refused input is
    shown beside its field; an unusual number is saved once it is typed again."""

    unit_ids = forms.CharField(
        label="Units' ids",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One per line as on the labels (an ISBT 128 id where the bank issues one); "
        "empty to number them <lot>-001, <lot>-002…",
    )
    second_look = second_look_field()

    class Meta:
        model = CellBankLot
        fields = CERTIFICATE_FIELDS
        help_texts = {"received_at": "Local time at the lot's site, in its own zone."}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "protocol" in self.fields:
            self.fields["protocol"].queryset = Protocol.objects.filter(therapy=Therapy.MSC)

    def clean_unit_ids(self) -> list[str]:
        return [line.strip() for line in self.cleaned_data["unit_ids"].splitlines() if line.strip()]

    def clean(self):
        data = super().clean()
        site, received = data.get("site"), data.get("received_at")
        if site and received:  # read as a local time at the lot's site
            wall = timezone.localtime(received).replace(tzinfo=None)
            data["received_at"] = wall.replace(tzinfo=site.time_zone)
        if self.errors:
            return data
        lot = CellBankLot(**{name: data.get(name) for name in CERTIFICATE_FIELDS})
        for field, message in lot_receipt_errors(lot=lot, unit_ids=data.get("unit_ids")).items():
            self.add_error(field if field in self.fields else None, message)
        if not self.errors:
            changed = {
                name: words
                for name, words in lot.unusual_values(data["protocol"].expected_ranges).items()
                if name in self.changed_data
            }
            self.take_second_look(changed)
        return data


class LotQcForm(SecondLook, forms.ModelForm):
    """The lot's QC, entered by the lab while it is in quarantine."""

    second_look = second_look_field()

    class Meta:
        model = CellBankLot
        fields = LOT_QC_FIELDS

    def clean(self):
        data = super().clean()
        if self.instance.status != LotStatus.QUARANTINE:
            raise ValidationError("QC is recorded while a lot is in quarantine.")
        changed = [name for name in LOT_QC_FIELDS if name in self.changed_data]
        self.take_second_look(
            unusual_values(
                data,
                keys={
                    name: CellBankLot.measured_fields[name]
                    for name in changed
                    if name in CellBankLot.measured_fields
                },
                expected=self.instance.protocol.expected_ranges,
            )
        )
        return data


class LotReleaseForm(forms.Form):
    password = forms.CharField(
        label="Your password",
        strip=False,
        widget=forms.PasswordInput,
        help_text="Signing the release: you must not be the person who entered the QC.",
    )
    meaning = forms.CharField(
        label="Meaning of the signature",
        initial=LOT_RELEASE_MEANING,
        max_length=200,
        widget=forms.TextInput(attrs={"size": 90}),
    )


class LotRejectForm(forms.Form):
    reason = forms.CharField(label="Reason", widget=forms.Textarea(attrs={"rows": 2}))


@admin.register(CellBankLot)
class CellBankLotAdmin(SiteScopedAdmin, admin.ModelAdmin):
    """The stock per site and lot: units free, allocated, used, discarded and expiring. The
    lab receives a lot and enters its QC here; a second lab user signs its release."""

    list_display = (
        "lot_number",
        "site",
        "status",
        "expires_on",
        "cells_per_unit_words",
        "free",
        "allocated",
        "used",
        "discarded",
        "expiring",
        "release_link",
    )
    list_filter = ("status", "site", "protocol", "tissue_source")
    search_fields = ("=lot_number", "=donor_code")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    readonly_fields = (
        "status",
        "units_words",
        "qc_recorded_by",
        "qc_recorded_at",
        "released_by",
        "released_at",
        "release_meaning",
        "release_link",
    )

    def get_queryset(self, request):
        today = timezone.localdate()
        return stock_by_lot(lots=super().get_queryset(request), today=today)

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = LotReceiptForm if obj is None else LotQcForm
        form = super().get_form(request, obj, change, **kwargs)
        if obj is None and "received_at" in form.base_fields:
            zones = "; ".join(
                f"{site.code}: {zone_words(site.time_zone)}" for site in user_sites(request.user)
            )
            form.base_fields["received_at"].help_text = f"Local time at the lot's site ({zones})."
        return form

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return (
                ("Certificate of analysis", {"fields": CERTIFICATE_FIELDS}),
                ("Units", {"fields": ("unit_ids", "second_look")}),
            )
        markers = tuple(name for name, _ in (*POSITIVE_MARKERS, *NEGATIVE_MARKERS))
        return (
            (None, {"fields": ("status", "units_words", "release_link")}),
            ("Certificate of analysis", {"fields": CERTIFICATE_FIELDS}),
            (
                "QC",
                {
                    "fields": (
                        "viability_pct",
                        "sterility_negative",
                        "mycoplasma_negative",
                        "endotoxin_eu_ml",
                        *markers,
                        "qc_recorded_by",
                        "qc_recorded_at",
                        "second_look",
                    )
                },
            ),
            ("Release", {"fields": ("released_by", "released_at", "release_meaning")}),
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        fields = (*self.readonly_fields, *CERTIFICATE_FIELDS)
        if obj.status != LotStatus.QUARANTINE:
            fields = (*fields, *LOT_QC_FIELDS)
        return fields

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="cells per unit", ordering="cells_per_unit")
    def cells_per_unit_words(self, obj):
        return cells_words(obj.cells_per_unit)

    @admin.display(description="free", ordering="free")
    def free(self, obj):
        return obj.free

    @admin.display(description="allocated", ordering="allocated")
    def allocated(self, obj):
        return obj.allocated

    @admin.display(description="used", ordering="used")
    def used(self, obj):
        return obj.used

    @admin.display(description="discarded", ordering="discarded")
    def discarded(self, obj):
        return obj.discarded

    @admin.display(description="expiring (free)", ordering="expiring")
    def expiring(self, obj):
        return obj.expiring or "–"

    @admin.display(description="units")
    def units_words(self, obj):
        expiring = lot_expiring(obj, today=timezone.localdate(timezone=obj.site.time_zone))
        return (
            f"{obj.free} free, {obj.allocated} allocated, {obj.used} used, {obj.discarded} "
            f"discarded of {obj.units_received}" + (" — expiring soon" if expiring else "")
        )

    @admin.display(description="")
    def release_link(self, obj):
        if obj.status != LotStatus.QUARANTINE or not obj.qc_recorded:
            return "–"
        url = reverse("admin:pathway_cellbanklot_release", args=[obj.pk])
        return format_html('<a class="button" href="{}">Sign the release</a>', url)

    def save_model(self, request, obj, form, change):
        """Receipt and QC go through the services; the forms have checked what they check."""
        if not change:
            created = lot_receive(
                by=request.user,
                unit_ids=form.cleaned_data.get("unit_ids") or None,
                values_checked=True,
                **{name: form.cleaned_data[name] for name in CERTIFICATE_FIELDS},
            )
            obj.pk = created.pk
            return
        lot_record_qc(
            lot=CellBankLot.objects.select_related("protocol", "site").get(pk=obj.pk),
            by=request.user,
            values_checked=True,
            **{name: form.cleaned_data[name] for name in LOT_QC_FIELDS},
        )

    def get_urls(self):
        release = path(
            "<path:object_id>/release/",
            self.admin_site.admin_view(self.release_view),
            name="pathway_cellbanklot_release",
        )
        return [release, *super().get_urls()]

    def release_view(self, request, object_id):
        """The lot's release signed by a second lab user, with each result beside its
        specification and what would refuse it; or its rejection with a reason."""
        lot = self.get_object(request, object_id)
        if not request.user.has_perm("pathway.change_cellbanklot"):
            raise PermissionDenied(
                f"Releasing lots is not in your role: {roles_allowed('release_lot')}."
            )
        return respond_in_zone(lot.site.time_zone, lambda: self._release_page(request, lot))

    def _release_page(self, request, lot):
        release_form = LotReleaseForm(request.POST if "release" in request.POST else None)
        reject_form = LotRejectForm(request.POST if "reject" in request.POST else None)
        if request.method == "POST":
            try:
                if "release" in request.POST and release_form.is_valid():
                    lot_release(
                        lot=lot,
                        by=request.user,
                        password=release_form.cleaned_data["password"],
                        meaning=release_form.cleaned_data["meaning"],
                        request=request,
                    )
                    self.message_user(
                        request, f"Lot {lot.lot_number} released for use.", messages.SUCCESS
                    )
                    return redirect("admin:pathway_cellbanklot_changelist")
                if "reject" in request.POST and reject_form.is_valid():
                    lot_reject(lot=lot, by=request.user, reason=reject_form.cleaned_data["reason"])
                    self.message_user(
                        request,
                        f"Lot {lot.lot_number} rejected: its units are discarded.",
                        messages.WARNING,
                    )
                    return redirect("admin:pathway_cellbanklot_changelist")
            except Refused as refusal:
                for reason in refusal.reasons:
                    self.message_user(request, f"Release refused: {reason}", messages.ERROR)
        results = [
            ("Viability after thaw", lot.viability_pct, f"≥ {lot.protocol.min_viability_pct} %"),
            ("Sterility", _negative(lot.sterility_negative), "negative"),
            ("Mycoplasma", _negative(lot.mycoplasma_negative), "negative"),
            ("Endotoxin (EU/mL)", lot.endotoxin_eu_ml, f"≤ {lot.protocol.max_endotoxin_eu_ml}"),
            *(
                (f"{label} (%)", getattr(lot, name), f"≥ {lot.protocol.min_positive_marker_pct} %")
                for name, label in POSITIVE_MARKERS
            ),
            *(
                (f"{label} (%)", getattr(lot, name), f"≤ {lot.protocol.max_negative_marker_pct} %")
                for name, label in NEGATIVE_MARKERS
            ),
            (
                "Storage (°C)",
                lot.storage_temperature_c,
                f"≤ {lot.protocol.max_storage_temperature_c}",
            ),
        ]
        context = self.admin_site.each_context(request) | {
            "title": f"Release lot {lot.lot_number}",
            "opts": self.model._meta,
            "original": lot,
            "lot": lot,
            "zone_words": zone_words(lot.site.time_zone),
            "results": results,
            "refusals": lot_release_refusals(lot=lot),
            "release_form": release_form,
            "reject_form": reject_form,
        }
        return render(request, "pathway/lot_release.html", context)


def _negative(value) -> str:
    return {True: "negative", False: "POSITIVE", None: "–"}[value]


@admin.register(ProductUnit)
class ProductUnitAdmin(ReadOnlyAdmin, SiteScopedAdmin, admin.ModelAdmin):
    """Each unit, where it is: free in stock, allocated to a patient's dose, on its way,
    infused or discarded. Its custody is on its course's page."""

    list_display = ("unit_id", "lot", "status", "course")
    list_select_related = ("lot__site", "course__patient")
    list_filter = ("status", "lot__site")
    search_fields = ("=unit_id", "=lot__lot_number")
    show_full_result_count = False
    paginator = EstimatedCountPaginator


class VitalSignsInline(admin.TabularInline):
    model = VitalSigns
    extra = 0
    can_delete = False
    fields = (
        "timepoint",
        "heart_rate_bpm",
        "systolic_mmhg",
        "diastolic_mmhg",
        "spo2_pct",
        "temperature_c",
        "respiratory_rate",
    )
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Infusion)
class InfusionAdmin(ReadOnlyAdmin, SiteScopedAdmin, admin.ModelAdmin):
    """The doses of MSC courses, as the bedside recorded them."""

    list_display = ("course", "dose_number", "started_at", "cells_given_words", "second_person")
    list_select_related = ("course__patient", "course__site", "second_person")
    list_filter = ("course__site",)
    search_fields = ("=course__patient__mrn", "=course__coi_id")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    inlines = (VitalSignsInline,)
    fields = (
        "course",
        "dose_number",
        "visit",
        "allocated_at",
        "allocated_by",
        "thawed_at",
        "started_at",
        "cells_given",
        "weight_kg",
        "weighed_on",
        "recorded_by",
        "second_person",
    )
    readonly_fields = fields

    @admin.display(description="cells given", ordering="cells_given")
    def cells_given_words(self, obj):
        return cells_words(obj.cells_given)

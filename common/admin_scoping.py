"""Site scoping for every admin: lists, detail pages, actions, search, autocomplete and the
choices offered in forms show only the user's sites."""

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.widgets import AutocompleteSelect, AutocompleteSelectMultiple
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.http import Http404
from django.utils import timezone
from django.utils.module_loading import import_string

from common.forms import (
    SafeAutocompleteSelect,
    SafeAutocompleteSelectMultiple,
    SafeModelChoiceField,
    SafeModelMultipleChoiceField,
)
from common.zones import local_words, respond_in_zone

# Each scoped model and the path from it to its site.
SITE_PATHS = {
    "patients.site": "pk",
    "patients.patient": "site",
    "patients.adverseevent": "course__site",
    "patients.bodymeasurement": "patient__site",
    "patients.lungfunctiontest": "patient__site",
    "patients.sixminutewalktest": "patient__site",
    "patients.symptomscore": "patient__site",
    "patients.chestct": "patient__site",
    "patients.clinicalassessment": "patient__site",
    "patients.medication": "patient__site",
    "pathway.treatmentcourse": "site",
    "pathway.transitionlog": "course__site",
    "pathway.batch": "course__site",
    "pathway.custodyevent": "course__site",
    "pathway.cellbanklot": "site",
    "pathway.productunit": "lot__site",
    "pathway.infusion": "course__site",
    "pathway.vitalsigns": "infusion__course__site",
    "patients.creactiveprotein": "patient__site",
    "scheduling.visit": "course__site",
    "scheduling.alert": "site",
    "scheduling.alertroute": "site",
    "scheduling.protocoldeviation": "course__site",
    "patients.clinichours": "site",
    "enquiries.consultation": "enquiry__site",
    "enquiries.enquiry": "site",
    "enquiries.enquiryreply": "enquiry__site",
}


def site_path_of(model) -> str | None:
    return SITE_PATHS.get(model._meta.label_lower)


def _model_field(model, name: str):
    try:
        return model._meta.get_field(name)
    except FieldDoesNotExist:
        return None


def scope(queryset, user):
    path = site_path_of(queryset.model)
    if path is None:
        return queryset
    # Who sees which site is a rule of the patients app; this floor only applies it.
    scope_to_user_sites = import_string(settings.SITE_SCOPE_FUNCTION)
    return scope_to_user_sites(queryset, user, path)


class ScopedChoices:
    """Foreign-key choices (selects and autocompletes alike) come from the user's sites only,
    and a posted value that cannot be an id is refused before any query (common/forms.py)."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        related = db_field.remote_field.model
        if site_path_of(related) is not None:
            kwargs["queryset"] = scope(related._default_manager.all(), request.user)
        kwargs.setdefault("form_class", SafeModelChoiceField)
        formfield = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if formfield is not None and type(formfield.widget) is AutocompleteSelect:
            formfield.widget.__class__ = SafeAutocompleteSelect
        return formfield

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        kwargs.setdefault("form_class", SafeModelMultipleChoiceField)
        formfield = super().formfield_for_manytomany(db_field, request, **kwargs)
        if formfield is not None and type(formfield.widget) is AutocompleteSelectMultiple:
            formfield.widget.__class__ = SafeAutocompleteSelectMultiple
        return formfield


# Models whose times are read in a zone found elsewhere than their site path: the paths to
# an object with a `time_zone`, tried in turn ("" is the object itself).
ZONE_PATHS = {
    "scheduling.notification": (
        "patient__site",
        "alert__site",
        "report_site",
        "consultation__enquiry__site",
        "enquiry__site",
    ),
    "scheduling.notificationarchive": ("site",),
    "scheduling.calendarfeedtoken": ("site",),
    "scheduling.resource": ("",),
}


def zone_paths_of(model) -> tuple[str, ...]:
    found = ZONE_PATHS.get(model._meta.label_lower)
    if found is not None:
        return found
    path = site_path_of(model)
    return () if path is None else ("" if path == "pk" else path,)


def site_zone_of(obj):
    """The time zone `obj`'s times are read in: its site's (through SITE_PATHS or
    ZONE_PATHS), or None."""
    for path in zone_paths_of(type(obj)):
        holder = obj
        for step in path.split("__") if path else ():
            holder = getattr(holder, step, None)
            if holder is None:
                break
        if holder is not None:
            return holder.time_zone
    return None


def _in_site_zone(name: str, field):
    """A list column showing a moment in its row's site's zone, named (a list mixes sites)."""

    def column(obj):
        value = getattr(obj, name)
        if value is None:
            return "–"
        return local_words(value, site_zone_of(obj) or timezone.get_current_timezone())

    column.short_description = field.verbose_name
    column.admin_order_field = name
    return column


class ZonedTimesAdmin:
    """Mix into a ModelAdmin: every time on its pages in the zone of the object's site, named;
    a page of one object in that object's zone, a list row by row (a list mixes sites)."""

    def get_list_display(self, request):
        columns = []
        for name in super().get_list_display(request):
            field = _model_field(self.model, name) if isinstance(name, str) else None
            columns.append(
                _in_site_zone(name, field) if isinstance(field, models.DateTimeField) else name
            )
        return columns

    def get_list_select_related(self, request):
        """The rows' sites come with them: the times need their zones, in one query."""
        related = super().get_list_select_related(request)
        paths = [path for path in zone_paths_of(self.model) if path]
        if not paths or related is True:
            return related
        return [*(related or ()), *paths]

    def _in_zone_of(self, request, object_id, respond):
        obj = self.get_object(request, object_id)
        return respond_in_zone(site_zone_of(obj) if obj is not None else None, respond)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        parent = super()
        return self._in_zone_of(
            request,
            object_id,
            lambda: parent.change_view(request, object_id, form_url, extra_context),
        )

    def history_view(self, request, object_id, extra_context=None):
        parent = super()
        return self._in_zone_of(
            request, object_id, lambda: parent.history_view(request, object_id, extra_context)
        )

    def delete_view(self, request, object_id, extra_context=None):
        parent = super()
        return self._in_zone_of(
            request, object_id, lambda: parent.delete_view(request, object_id, extra_context)
        )


class OwnSitesFilter(admin.RelatedFieldListFilter):
    """A list's "By site" offers the user's sites only: another site's name is not theirs to
    read either."""

    def field_choices(self, field, request, model_admin):
        sites = scope(field.related_model.objects.all(), request.user).order_by("name")
        return [(site.pk, str(site)) for site in sites]


def _is_a_site_filter(spec) -> bool:
    return isinstance(spec, str) and spec.split("__")[-1] == "site"


class SiteScopedAdmin(ZonedTimesAdmin, ScopedChoices):
    """Mix into a ModelAdmin whose model is in SITE_PATHS: its pages show the user's sites
    only, and every time in the site's zone, named."""

    def get_queryset(self, request):
        return scope(super().get_queryset(request), request.user)

    def get_list_filter(self, request):
        return [
            (spec, OwnSitesFilter) if _is_a_site_filter(spec) else spec
            for spec in super().get_list_filter(request)
        ]

    def get_object(self, request, object_id, from_field=None):
        """Another site's object is not found: 404, whatever the URL guessed."""
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("No such object at your sites.")
        return obj

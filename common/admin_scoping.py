"""Site scoping for every admin: lists, detail pages, actions, search, autocomplete and the
choices offered in forms show only the user's sites."""

from django.conf import settings
from django.contrib.admin.widgets import AutocompleteSelect, AutocompleteSelectMultiple
from django.http import Http404
from django.utils.module_loading import import_string

from common.forms import (
    SafeAutocompleteSelect,
    SafeAutocompleteSelectMultiple,
    SafeModelChoiceField,
    SafeModelMultipleChoiceField,
)

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
    "scheduling.visit": "course__site",
    "scheduling.alert": "site",
    "scheduling.alertroute": "site",
    "scheduling.protocoldeviation": "course__site",
    "patients.clinichours": "site",
}


def site_path_of(model) -> str | None:
    return SITE_PATHS.get(model._meta.label_lower)


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


class SiteScopedAdmin(ScopedChoices):
    """Mix into a ModelAdmin whose model is in SITE_PATHS."""

    def get_queryset(self, request):
        return scope(super().get_queryset(request), request.user)

    def get_object(self, request, object_id, from_field=None):
        """Another site's object is not found: 404, whatever the URL guessed."""
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("No such object at your sites.")
        return obj

"""Form fields that refuse a value that cannot be an id before asking the database about it.

Django's model choice fields pass what was posted straight to a query: "abc" is caught, but
a 40-digit number reaches PostgreSQL and fails there ("value out of range for type bigint"),
and the admin's autocomplete widget looks up whatever a refused form posted when it shows the
form again. Both were server errors.
"""

from django import forms
from django.contrib.admin.widgets import AutocompleteSelect, AutocompleteSelectMultiple
from django.db import models

# The range of PostgreSQL's bigint, which every primary key here fits.
_ID_RANGE = range(-(2**63), 2**63)


def could_be_id(field: models.Field, value) -> bool:
    """Whether `value` can be looked up as `field` (a primary key or other target)."""
    try:
        python = field.to_python(value)
    except (forms.ValidationError, ValueError, TypeError, OverflowError):
        return False
    if isinstance(field, models.IntegerField | models.AutoField):
        return python in _ID_RANGE
    return True


def _target(queryset, to_field_name):
    return queryset.model._meta.get_field(to_field_name or queryset.model._meta.pk.name)


class SafeModelChoiceField(forms.ModelChoiceField):
    def to_python(self, value):
        if value not in self.empty_values and not could_be_id(
            _target(self.queryset, self.to_field_name), value
        ):
            raise forms.ValidationError(
                self.error_messages["invalid_choice"], code="invalid_choice"
            )
        return super().to_python(value)


class SafeModelMultipleChoiceField(forms.ModelMultipleChoiceField):
    def _check_values(self, value):
        target = _target(self.queryset, self.to_field_name)
        for one in value if isinstance(value, list | tuple) else [value]:
            if not could_be_id(target, one):
                raise forms.ValidationError(
                    self.error_messages["invalid_pk_value"],
                    code="invalid_pk_value",
                    params={"pk": one},
                )
        return super()._check_values(value)


class _OnlyIds:
    """Re-display a refused form without looking up posted values that cannot be ids."""

    def optgroups(self, name, value, attr=None):
        remote = self.field.remote_field
        target = remote.model._meta.get_field(remote.field_name)
        value = [v for v in value if could_be_id(target, v)]
        return super().optgroups(name, value, attr)


class SafeAutocompleteSelect(_OnlyIds, AutocompleteSelect):
    pass


class SafeAutocompleteSelectMultiple(_OnlyIds, AutocompleteSelectMultiple):
    pass

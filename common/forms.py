"""Form plumbing: fields that refuse a value that cannot be an id before asking the database
about it, and the second look a form takes at an unusual value.

Django's model choice fields pass what was posted straight to a query: "abc" is caught, but
a 40-digit number reaches PostgreSQL and fails there ("value out of range for type bigint"),
and the admin's autocomplete widget looks up whatever a refused form posted when it shows the
form again. Both were server errors.
"""

from decimal import Decimal

from django import forms
from django.contrib.admin.widgets import AutocompleteSelect, AutocompleteSelectMultiple
from django.db import models
from django.utils.crypto import salted_hmac

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


SECOND_LOOK_WORDS = "If it is right, type it again to confirm it; otherwise correct it."


def second_look_token(field: str, value, *, context: str = "") -> str:
    """What a form keeps of a value it asked to see again: the field and a keyed digest of it
    and of what it is on (`context`: the form and the object), so that a scripted post cannot
    make one up and skip the typing again."""
    if isinstance(value, Decimal):
        value = value.normalize()  # 9.50 typed again as 9.5 is the same value
    digest = salted_hmac(f"second-look.{context}", f"{field}={value}").hexdigest()[:20]
    return f"{field}:{digest}"


class SecondLook:
    """A form that saves a possible but unusual value only once it has been typed again.

    The form calls `take_second_look(unusual)` from its `clean`, with the unusual values by
    field and the words saying why. The first time, each gets its words beside it and is
    emptied, so that it must be typed again; typed again the same, it is taken. A form using
    this declares the hidden `second_look` field (`second_look_field()`) and shows it.
    """

    def take_second_look(self, unusual: dict[str, str]) -> bool:
        """Whether every unusual value has had its second look (the caller may then tell the
        service the values were checked)."""
        name = self.add_prefix("second_look")
        seen = set((self.data.get(name) or "").split())
        tokens = {
            field: second_look_token(field, self.cleaned_data.get(field)) for field in unusual
        }
        asked = {field: words for field, words in unusual.items() if tokens[field] not in seen}
        if not asked:
            return True
        data = self.data.copy()
        data[name] = " ".join(tokens[field] for field in asked)
        for field, words in asked.items():
            self.add_error(field, f"{words} {SECOND_LOOK_WORDS}")
            data[self.add_prefix(field)] = ""
        self.data = data
        return False


def second_look_field() -> forms.CharField:
    return forms.CharField(required=False, widget=forms.HiddenInput)


def errors_beside_fields(form, by_field: dict[str, list[str]], general=()) -> None:
    """Errors a service gave on a form: each beside its field, the general ones (and any for a
    field the form does not show) above it."""
    for reason in general:
        form.add_error(None, reason)
    for field, reasons in by_field.items():
        for reason in reasons:
            form.add_error(field if field in form.fields else None, reason)

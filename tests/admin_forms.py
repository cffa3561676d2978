"""Submit an admin change form the way a browser would: every field as the page shows it."""

from django.forms import MultiWidget


def _bound_values(form):
    data = {}
    for bound in form:
        value = bound.value()
        if value is None or value is False:
            continue
        if isinstance(bound.field.widget, MultiWidget) and not isinstance(value, list | tuple):
            value = bound.field.widget.decompress(value)
        if isinstance(value, list | tuple):
            for i, part in enumerate(value):
                data[f"{bound.html_name}_{i}"] = part
        else:
            data[bound.html_name] = value
    return data


def change_form_data(response) -> dict:
    """The POST data of the change form in `response`, unchanged."""
    data = _bound_values(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        data |= _bound_values(formset.management_form)
        for form in formset.forms:
            data |= _bound_values(form)
    return data

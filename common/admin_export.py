"""Export what a list shows as CSV: the admin's own filters, search and site scoping apply,
since an action receives exactly the rows the user selected from their list."""

import csv
import datetime as dt
from decimal import Decimal

from django.contrib import admin
from django.contrib.admin.utils import label_for_field, lookup_field
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.http import HttpResponse
from django.utils.html import strip_tags

from common.replica import replica_reads


@admin.action(description="Export selected rows as CSV", permissions=["view"])
@replica_reads(purpose="a CSV export")
def export_as_csv(modeladmin, request, queryset):
    shown = [c for c in modeladmin.get_list_display(request) if c != "action_checkbox"]
    columns = [_time_field_behind(modeladmin, column) or column for column in shown]
    response = HttpResponse(content_type="text/csv")
    name = modeladmin.model._meta.model_name
    response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    writer = csv.writer(response)
    writer.writerow([_header(modeladmin, column) for column in columns])
    related = getattr(modeladmin, "list_select_related", ())
    rows = queryset.select_related(*related) if isinstance(related, list | tuple) else queryset
    for obj in rows.iterator(chunk_size=2000):
        values = []
        for column in columns:
            _, _, value = lookup_field(column, obj, modeladmin)
            values.append(_cell(value))
        writer.writerow(values)
    return response


# Times leave as ISO 8601 with their UTC offset, so no spreadsheet guesses a zone.
TIME_NOTE = " (ISO 8601, UTC)"


def _time_field_behind(modeladmin, column) -> str | None:
    """A column that shows a time in words (ordered by a date-time field) exports that field,
    so the file carries the moment itself, not its rendering in one zone."""
    order = getattr(getattr(modeladmin, str(column), None), "admin_order_field", None)
    if not isinstance(order, str):
        return None
    try:
        field = modeladmin.model._meta.get_field(order)
    except FieldDoesNotExist:
        return None
    return order if isinstance(field, models.DateTimeField) else None


def _header(modeladmin, column) -> str:
    label = strip_tags(str(label_for_field(column, modeladmin.model, modeladmin)))
    try:
        field = modeladmin.model._meta.get_field(column)
    except (FieldDoesNotExist, TypeError):
        return label
    return label + TIME_NOTE if isinstance(field, models.DateTimeField) else label


# A text cell a spreadsheet would run as a formula (CSV injection): "=HYPERLINK(...)", or one
# starting "+", "-", "@", a tab or a carriage return. Such a cell is written with a leading
# apostrophe, which spreadsheets show as text. Numbers are not text: -3 stays -3.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def formula_neutralised(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, int | float | Decimal):
        return str(value)
    return formula_neutralised(strip_tags(str(value)))

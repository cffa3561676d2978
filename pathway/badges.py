"""A course's state as a coloured badge, for lists (colours in pathway/static/pathway/admin.css)."""

from django.utils.html import format_html
from django.utils.safestring import SafeString

from pathway.states import CourseState


def state_badge(state: str) -> SafeString:
    return format_html(
        '<span class="state-badge state-{}">{}</span>', state, CourseState(state).label
    )

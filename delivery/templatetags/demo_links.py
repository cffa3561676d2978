"""The admin index's way to the demo's patient pages, shown only where the page is there."""

from django import template
from django.urls import reverse
from django.utils.html import format_html

from delivery.demo import demo_links_shown

register = template.Library()


@register.simple_tag
def demo_patient_links_link() -> str:
    """A line linking the demo's page of patients' links; nothing outside the demo."""
    if not demo_links_shown():
        return ""
    return format_html(
        '<p class="demo-patient-links">Demo: <a href="{}">open a patient\'s pages</a> '
        "(a booked visit's one-tap page, an open check-in's questions).</p>",
        reverse("demo-patient-links"),
    )

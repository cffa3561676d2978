from django.contrib import admin
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django_celery_beat.admin import CrontabScheduleAdmin
from django_celery_beat.models import CrontabSchedule

from delivery.models import TEMPLATE_WORDS, SenderPace, WhatsAppTemplate

admin.site.unregister(CrontabSchedule)


@admin.register(CrontabSchedule)
class SafeCrontabScheduleAdmin(CrontabScheduleAdmin):
    """django-celery-beat's crontab page, except that a refused form is shown again with its
    errors: its own "human readable" column parses the refused values and raised (a 500)."""

    list_display = ("__str__", "in_words")
    fields = (
        "in_words",
        "minute",
        "hour",
        "day_of_month",
        "month_of_year",
        "day_of_week",
        "timezone",
    )
    readonly_fields = ("in_words",)

    @admin.display(description="human readable")
    def in_words(self, obj):
        try:
            return obj.human_readable
        except Exception:  # values the form refuses: it says what is wrong beside them
            return "–"


@admin.register(SenderPace)
class SenderPaceAdmin(admin.ModelAdmin):
    """Each sending number's pace: what its provider allows (delivery/pacing.py)."""

    list_display = ("sender", "per_second", "next_slot_at")
    fields = ("sender", "per_second", "next_slot_at")
    readonly_fields = ("next_slot_at",)
    search_fields = ("sender",)


@admin.register(WhatsAppTemplate)
class WhatsAppTemplateAdmin(admin.ModelAdmin):
    """The provider's approved WhatsApp templates, per message and language: what a message
    the clinic starts outside the patient's 24-hour window is sent as (delivery/whatsapp.py)."""

    list_display = ("name", "language", "content_sid", "approved")
    list_filter = ("name", "language", "approved")
    fields = ("name", "language", "body", "variables", "content_sid", "approved", "words")
    readonly_fields = ("words",)

    @admin.display(description="words it may carry")
    def words(self, obj):
        names = [obj.name] if obj and obj.name in TEMPLATE_WORDS else list(TEMPLATE_WORDS)
        return format_html_join(
            mark_safe("<br>"),
            "{}: <code>{}</code>, {}",
            (
                (name.replace("_", " "), word, what)
                for name in names
                for word, what in TEMPLATE_WORDS[name].items()
            ),
        )

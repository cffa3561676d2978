from django.contrib import admin

from scheduling.models import Visit


@admin.register(Visit)
class VisitAdmin(admin.ModelAdmin):
    list_display = (
        "course",
        "kind",
        "protocol_visit",
        "scheduled_at",
        "window_closes_on",
        "status",
    )
    list_select_related = ("course__patient", "course__site", "protocol_visit")
    list_filter = ("status", "kind", "course__site")
    search_fields = ("=course__patient__mrn", "course__patient__last_name")
    readonly_fields = (
        "course",
        "kind",
        "protocol_visit",
        "window_opens_on",
        "window_closes_on",
        "created_at",
    )
    date_hierarchy = "scheduled_at"

    def has_add_permission(self, request):
        return False

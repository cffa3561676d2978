from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from common.admin_scoping import SiteScopedAdmin
from common.paginator import EstimatedCountPaginator
from patients.access import user_sees_all_sites, user_sites
from patients.admin import (
    ClinicalRecordsSavedThroughServices,
    VisitAdverseEventInline,
    VisitChestCTInline,
    VisitLungFunctionInline,
    VisitSymptomInline,
    VisitWalkInline,
)
from reporting.calendar_feed import (
    calendar_feed_sites,
    calendar_feed_token_hash,
    calendar_feed_token_issue,
    calendar_feed_token_revoke,
)
from scheduling.alerts import alert_acknowledge
from scheduling.models import (
    Alert,
    CalendarFeedToken,
    DeliveryAttempt,
    Notification,
    Visit,
    VisitKind,
    VisitStatus,
)
from scheduling.selectors import UPCOMING_PROCEDURE_DAYS, upcoming_procedures
from scheduling.services import visit_record_done, visit_reschedule


class OverdueFilter(admin.SimpleListFilter):
    title = "overdue"
    parameter_name = "overdue"

    def lookups(self, request, model_admin):
        return [("yes", "Overdue")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            sites = user_sites(request.user)
            overdue = Visit.objects.overdue(sites=sites, at=timezone.now())
            return queryset.filter(pk__in=overdue.values("pk"))
        return queryset


class UpcomingProceduresFilter(admin.SimpleListFilter):
    title = "procedures"
    parameter_name = "upcoming"

    def lookups(self, request, model_admin):
        return [("yes", f"Booked in the next {UPCOMING_PROCEDURE_DAYS} days")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            sites = user_sites(request.user)
            return queryset.filter(pk__in=upcoming_procedures(sites=sites).values("pk"))
        return queryset


@admin.register(Visit)
class VisitAdmin(SiteScopedAdmin, ClinicalRecordsSavedThroughServices, admin.ModelAdmin):
    list_display = (
        "course",
        "kind",
        "protocol_visit",
        "scheduled_at",
        "window_closes_on",
        "status",
    )
    list_select_related = ("course__patient", "course__site", "protocol_visit")
    list_filter = ("status", OverdueFilter, UpcomingProceduresFilter, "kind", "course__site")
    search_fields = ("=course__patient__mrn", "^course__patient__last_name")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    fields = (
        "course",
        "kind",
        "protocol_visit",
        "scheduled_at",
        "place",
        "window_opens_on",
        "window_closes_on",
        "status",
        "done_at",
    )
    readonly_fields = (
        "course",
        "kind",
        "protocol_visit",
        "window_opens_on",
        "window_closes_on",
        "status",
        "done_at",
    )
    actions = ["mark_done"]
    # Entering a follow-up's measurements here marks the visit done.
    inlines = (
        VisitLungFunctionInline,
        VisitWalkInline,
        VisitSymptomInline,
        VisitChestCTInline,
        VisitAdverseEventInline,
    )

    def has_add_permission(self, request):
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        visit = self.get_object(request, object_id)
        with timezone.override(visit.course.site.time_zone if visit else None):
            return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        """Moving a visit goes through the service that moves its reminders with it."""
        if {"scheduled_at", "place"} & set(form.changed_data):
            visit_reschedule(
                visit=Visit.objects.get(pk=obj.pk), scheduled_at=obj.scheduled_at, place=obj.place
            )

    @admin.action(description="Mark selected follow-ups done (now)", permissions=["change"])
    def mark_done(self, request, queryset):
        # Procedures are done by recording them on the course, which checks what they need.
        open_visits = queryset.filter(
            kind=VisitKind.FOLLOW_UP, status__in=[VisitStatus.PLANNED, VisitStatus.BOOKED]
        )
        for visit in open_visits:
            visit_record_done(visit=visit, done_at=timezone.now())
        self.message_user(request, f"{len(open_visits)} visit(s) marked done.", messages.SUCCESS)


class OpenAlertFilter(admin.SimpleListFilter):
    title = "acknowledged"
    parameter_name = "open"

    def lookups(self, request, model_admin):
        return [("yes", "Open"), ("no", "Acknowledged")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(acknowledged_at__isnull=self.value() == "yes")
        return queryset


@admin.register(Alert)
class AlertAdmin(SiteScopedAdmin, admin.ModelAdmin):
    list_display = (
        "created_at",
        "severity",
        "kind",
        "site",
        "course",
        "message",
        "acknowledged_by",
    )
    list_select_related = ("site", "course__patient", "acknowledged_by")
    list_filter = (OpenAlertFilter, "severity", "kind", "site")
    search_fields = ("=course__patient__mrn", "=course__coi_id")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    readonly_fields = [f.name for f in Alert._meta.fields]
    actions = ["acknowledge"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Acknowledge selected alerts", permissions=["change"])
    def acknowledge(self, request, queryset):
        done = sum(alert_acknowledge(alert=alert, by=request.user) for alert in queryset)
        self.message_user(request, f"{done} alert(s) acknowledged.", messages.SUCCESS)


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ("at", "succeeded", "error", "provider_message_id")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = (
        "send_after",
        "template",
        "channel",
        "patient",
        "user",
        "status",
        "attempts",
        "sent_at",
    )
    list_select_related = ("patient", "user")
    list_filter = ("status", "channel", "template")
    search_fields = ("=patient__mrn", "=idempotency_key")
    readonly_fields = [f.name for f in Notification._meta.fields]
    paginator = EstimatedCountPaginator
    inlines = (DeliveryAttemptInline,)
    show_full_result_count = False

    def get_queryset(self, request):
        """Reminders to the user's sites' patients, their alerts and reports, and their own mail."""
        queryset = super().get_queryset(request)
        if user_sees_all_sites(request.user):
            return queryset
        sites = user_sites(request.user).values("pk")
        return queryset.filter(
            Q(patient__site__in=sites)
            | Q(alert__site__in=sites)
            | Q(report_site__in=sites)
            | Q(user=request.user)
        )

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("No such notification for you.")
        return obj

    ordering = ("-id",)  # the primary key's index; send_after is indexed only where pending

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ActiveLinkFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "active"

    def lookups(self, request, model_admin):
        return [("yes", "Active"), ("no", "Revoked")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(revoked_at__isnull=self.value() == "yes")
        return queryset


@admin.register(CalendarFeedToken)
class CalendarFeedTokenAdmin(admin.ModelAdmin):
    """Each user's own calendar links: issued by choosing a site, revoked by an action."""

    list_display = ("site", "user", "created_at", "last_used_at", "revoked_at")
    list_select_related = ("site", "user")
    list_filter = (ActiveLinkFilter,)
    readonly_fields = ("site", "user", "created_at", "last_used_at", "revoked_at", "revoked_by")
    actions = ["revoke", "issue_again"]

    def get_queryset(self, request):
        """A link is its owner's secret: only superusers see other people's."""
        queryset = super().get_queryset(request)
        return queryset if request.user.is_superuser else queryset.filter(user=request.user)

    def get_fields(self, request, obj=None):
        return ("site",) if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "site":
            kwargs["queryset"] = calendar_feed_sites(user=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_delete_permission(self, request, obj=None):
        return False  # revoked, not deleted: the record of who had a link stays

    def add_view(self, request, form_url="", extra_context=None):
        # One link at a time: it is shown once, on the page that answers this form.
        extra_context = {
            "title": "Issue a calendar link for a site",
            "show_save_and_add_another": False,
            "show_save_and_continue": False,
            **(extra_context or {}),
        }
        return super().add_view(request, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        if change:
            return  # nothing on a link can be edited
        token = calendar_feed_token_issue(user=request.user, site=obj.site)
        # The service returns only the secret; the admin goes on with the row it made.
        obj.pk = CalendarFeedToken.objects.get(token_hash=calendar_feed_token_hash(token)).pk
        obj.refresh_from_db()
        request.issued_calendar_link = self._link(request, token)

    @admin.action(description="Revoke selected calendar links", permissions=["change"])
    def revoke(self, request, queryset):
        done = sum(calendar_feed_token_revoke(feed=f, by=request.user) for f in queryset)
        self.message_user(request, f"{done} calendar link(s) revoked.", messages.SUCCESS)

    @admin.action(
        description="Issue a new link for the sites of my selected links (the old ones stop)",
        permissions=["add"],
    )
    def issue_again(self, request, queryset):
        mine = queryset.filter(user=request.user).select_related("site")
        links = []
        for site in {feed.site for feed in mine}:
            try:
                token = calendar_feed_token_issue(user=request.user, site=site)
            except PermissionDenied as denied:
                self.message_user(request, str(denied), messages.ERROR)
                continue
            links.append((site, self._link(request, token)))
        return self._show_links(request, links) if links else None

    # The secret is shown in the page that issued it, not passed on in a message: messages
    # travel in a cookie, and the secret is stored nowhere.

    def _link(self, request, token: str) -> str:
        return request.build_absolute_uri(reverse("calendar-feed", args=[token]))

    def _show_links(self, request, links):
        context = {
            **self.admin_site.each_context(request),
            "title": "Your new calendar link" if len(links) == 1 else "Your new calendar links",
            "links": links,
        }
        return TemplateResponse(request, "reporting/calendar_links_issued.html", context)

    def response_add(self, request, obj, post_url_continue=None):
        return self._show_links(request, [(obj.site, request.issued_calendar_link)])

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Q
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe

from common.admin_readonly import ReadOnlyAdmin
from common.admin_scoping import (
    OwnSitesFilter,
    ScopedChoices,
    SiteScopedAdmin,
    ZonedTimesAdmin,
    scope,
)
from common.errors import Refused
from common.paginator import EstimatedCountPaginator
from common.urls import public_url_for
from common.zones import local_words, respond_in_zone, zone_words
from patients.access import user_sees_all_sites, user_sites
from patients.admin import (
    ClinicalRecordsSavedThroughServices,
    VisitAdverseEventInline,
    VisitChestCTInline,
    VisitCReactiveProteinInline,
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
from scheduling.alerts import (
    SNOOZE_CHOICES,
    alert_acknowledge,
    alert_may_act,
    alert_roles_words,
    alert_snooze,
    alerts_for,
)
from scheduling.capacity import capacity_by_day
from scheduling.chains import LAB_KINDS
from scheduling.models import (
    Alert,
    AlertRoute,
    CalendarFeedToken,
    DeliveryAttempt,
    Notification,
    NotificationArchive,
    ProtocolDeviation,
    Resource,
    ResourceClosure,
    ResourceKind,
    ResourceSession,
    ResourceWording,
    Visit,
    VisitStatus,
)
from scheduling.selectors import UPCOMING_PROCEDURE_DAYS, upcoming_procedures
from scheduling.services import (
    visit_book_again,
    visit_mark_missed,
    visit_missed_refusals,
    visit_move_refusals,
    visit_reschedule,
    visit_set_place,
)
from scheduling.windows import window_words

_REASON_HELP = (
    "Needed to book outside the visit's window or the site's clinic hours, or to count "
    "measurements taken before the window opens. Kept as a protocol deviation."
)


class VisitForm(forms.ModelForm):
    """Booking or moving a visit; what the booking rules refuse is shown beside the time."""

    deviation_reason = forms.CharField(
        label="Reason for a deviation",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_REASON_HELP,
    )

    class Meta:
        model = Visit
        fields = ("scheduled_at", "place")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and "scheduled_at" in self.fields:
            site = self.instance.course.site
            self.fields[
                "scheduled_at"
            ].help_text = f"Local time at {site.name} ({zone_words(site.time_zone)})."

    def clean(self):
        data = super().clean()
        if self.instance.pk and "scheduled_at" in self.changed_data:
            when = data.get("scheduled_at") or self.instance.scheduled_at
            for refusal in visit_move_refusals(
                visit=self.instance,
                scheduled_at=when,
                deviation_reason=data.get("deviation_reason", ""),
            ):
                self.add_error("scheduled_at", refusal)
        return data


class VisitStepForm(forms.Form):
    """A step on one visit; its times are the site's local times, and say so."""

    def __init__(self, *args, zone, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            if isinstance(field, forms.SplitDateTimeField):
                field.help_text = f"Local time at the course's site ({zone_words(zone)})."


class MarkMissedForm(VisitStepForm):
    reason = forms.CharField(
        label="Why was it missed?", widget=forms.Textarea(attrs={"rows": 3}), max_length=1000
    )


class BookAgainForm(VisitStepForm):
    scheduled_at = forms.SplitDateTimeField(
        label="New date and time", widget=admin.widgets.AdminSplitDateTime
    )
    place = forms.CharField(max_length=200, required=False)
    deviation_reason = forms.CharField(
        label="Reason for a deviation",
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        help_text=_REASON_HELP,
    )


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
        "when",
        "window_closes_on",
        "status",
    )
    list_select_related = ("course__patient", "course__site", "protocol_visit")

    list_filter = ("status", OverdueFilter, UpcomingProceduresFilter, "kind", "course__site")
    search_fields = ("=course__patient__mrn", "^course__patient__last_name")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    form = VisitForm
    fields = (
        "course",
        "kind",
        "protocol_visit",
        "scheduled_at",
        "place",
        "patient_asks",
        "deviation_reason",
        "window_opens_on",
        "window_closes_on",
        "status",
        "next_steps",
        "missed_reason",
        "done_at",
    )
    readonly_fields = (
        "course",
        "kind",
        "protocol_visit",
        "patient_asks",
        "window_opens_on",
        "window_closes_on",
        "status",
        "next_steps",
        "missed_reason",
        "done_at",
    )
    # Entering a follow-up's measurements here marks the visit done.
    inlines = (
        VisitLungFunctionInline,
        VisitWalkInline,
        VisitSymptomInline,
        VisitCReactiveProteinInline,
        VisitChestCTInline,
        VisitAdverseEventInline,
    )

    def has_add_permission(self, request):
        return False

    @admin.display(description="booked for (the site's time)", ordering="scheduled_at")
    def when(self, obj):
        """Each visit in its own site's zone, named: a list mixes sites."""
        return local_words(obj.scheduled_at, obj.course.site.time_zone)

    @admin.display(description="the patient asks")
    def patient_asks(self, obj):
        """Their requests for this visit not yet dealt with: the slot they picked, in the
        site's zone, or their words."""
        zone = obj.course.site.time_zone
        asks = [
            (
                request.get_kind_display(),
                f"for {local_words(request.wanted_at, zone)}"
                if request.wanted_at
                else f"“{request.text[:200]}”",
                request.source,
                local_words(request.created_at, zone),
            )
            for request in obj.requests.filter(done_at__isnull=True).order_by("created_at")
        ]
        if not asks:
            return "–"
        return format_html_join(mark_safe("<br>"), "{}: <strong>{}</strong> (by {}, {})", asks)

    def save_model(self, request, obj, form, change):
        """Booking or moving a visit goes through the service that moves its reminders with
        it (the form has shown what it would refuse). A follow-up is done only when its
        measurements are recorded below, never by a button."""
        visit = Visit.objects.select_related("course__site").get(pk=obj.pk)
        if "scheduled_at" in form.changed_data:
            try:
                visit_reschedule(
                    visit=visit,
                    scheduled_at=obj.scheduled_at,
                    place=obj.place,
                    by=request.user,
                    deviation_reason=form.cleaned_data.get("deviation_reason", ""),
                )
            except Refused as refusal:  # taken by someone else since the form was checked
                request.visit_refused = refusal.reasons
        elif "place" in form.changed_data:
            visit_set_place(visit=visit, place=obj.place)

    def response_change(self, request, obj):
        refused = getattr(request, "visit_refused", None)
        if refused:
            for reason in refused:
                self.message_user(request, f"Nothing was changed: {reason}", messages.ERROR)
            return redirect("admin:scheduling_visit_change", object_id=obj.pk)
        return super().response_change(request, obj)

    def get_urls(self):
        return [
            path(
                "<path:object_id>/missed/",
                self.admin_site.admin_view(self.mark_missed_view),
                name="scheduling_visit_missed",
            ),
            path(
                "<path:object_id>/book-again/",
                self.admin_site.admin_view(self.book_again_view),
                name="scheduling_visit_book_again",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="next steps")
    def next_steps(self, obj):
        links = []
        if not visit_missed_refusals(visit=obj):
            links.append(("scheduling_visit_missed", "Mark missed"))
        if obj.status == VisitStatus.MISSED:
            links.append(("scheduling_visit_book_again", "Book again"))
        if not links:
            return "–"
        return format_html_join(
            " ",
            '<a class="button" href="{}">{}</a>',
            ((reverse(f"admin:{name}", args=[obj.pk]), label) for name, label in links),
        )

    def _visit_step(self, request, object_id, form_class, title, act, refusals=None):
        visit = self.get_object(request, object_id)
        if not self.has_change_permission(request, visit):
            raise PermissionDenied
        found = refusals(visit=visit) if refusals else []
        return respond_in_zone(
            visit.course.site.time_zone,
            lambda: self._visit_step_page(request, visit, form_class, title, act, found),
        )

    def _visit_step_page(self, request, visit, form_class, title, act, refusals=()):
        """The step's form; where the step cannot succeed (`refusals`), the reasons instead."""
        zone = visit.course.site.time_zone
        form = form_class(request.POST or None, zone=zone) if not refusals else None
        if form is not None and request.method == "POST" and form.is_valid():
            try:
                message = act(visit, form.cleaned_data)
            except Refused as refusal:
                for reason in refusal.reasons:
                    form.add_error(None, reason)
            else:
                self.message_user(request, message, messages.SUCCESS)
                return redirect("admin:scheduling_visit_change", object_id=visit.pk)
        context = self.admin_site.each_context(request) | {
            "title": title,
            "visit": visit,
            "form": form,
            "refusals": refusals,
            "opts": self.model._meta,
            "booked_words": local_words(visit.scheduled_at, zone),
            "window_words": window_words(visit),
        }
        return TemplateResponse(request, "scheduling/visit_step.html", context)

    def mark_missed_view(self, request, object_id):
        def act(visit, data):
            visit_mark_missed(visit=visit, by=request.user, reason=data["reason"])
            return f"The {visit.label} is marked missed; its reminders are cancelled."

        return self._visit_step(
            request, object_id, MarkMissedForm, "Mark missed", act, refusals=visit_missed_refusals
        )

    def book_again_view(self, request, object_id):
        def act(visit, data):
            again = visit_book_again(
                visit=visit,
                scheduled_at=data["scheduled_at"],
                by=request.user,
                place=data["place"],
                deviation_reason=data["deviation_reason"],
            )
            told = " The patient will be reminded." if again.notifications.exists() else ""
            return f"The {again.label} is booked again.{told}"

        return self._visit_step(request, object_id, BookAgainForm, "Book again", act)


SNOOZE_WORDS = (("4h", "4 hours"), ("1d", "a day"), ("3d", "3 days"))


@admin.register(ProtocolDeviation)
class ProtocolDeviationAdmin(ReadOnlyAdmin, SiteScopedAdmin, admin.ModelAdmin):
    """Steps taken outside the protocol's plan, with their reasons: written by the services
    that allowed them, never edited."""

    list_display = ("at", "course", "kind", "detail", "reason", "by")
    list_select_related = ("course__patient", "by")
    list_filter = ("kind", "course__site")
    search_fields = ("=course__patient__mrn", "=course__coi_id")
    show_full_result_count = False
    paginator = EstimatedCountPaginator


class ResourceSessionInline(admin.TabularInline):
    model = ResourceSession
    extra = 0


class ResourceClosureInline(admin.TabularInline):
    model = ResourceClosure
    extra = 0


class ResourceWordingInline(admin.TabularInline):
    """What patients read in place of the resource's name: a name and an address in each
    of their languages (scheduling/places.py)."""

    model = ResourceWording
    extra = 0
    fields = ("language", "name", "address")
    formfield_overrides = {models.TextField: {"widget": forms.Textarea(attrs={"rows": 3})}}


@admin.register(Resource)
class ResourceAdmin(ZonedTimesAdmin, ScopedChoices, admin.ModelAdmin):
    """A resource's weekly sessions and closures, in its own time zone: the slots bookings
    will take (scheduling/slots.py). Staff see their sites' resources and the lab's (no
    site); only the lab, or someone who sees every site, changes the lab's."""

    list_display = ("name", "kind", "site", "time_zone")
    list_filter = ("kind", ("site", OwnSitesFilter))
    list_select_related = ("site",)
    inlines = (ResourceWordingInline, ResourceSessionInline, ResourceClosureInline)
    change_list_template = "scheduling/resource_change_list.html"

    def get_urls(self):
        capacity = path(
            "capacity/",
            self.admin_site.admin_view(self.capacity_view),
            name="scheduling_resource_capacity",
        )
        return [capacity, *super().get_urls()]

    def capacity_view(self, request):
        """Each resource's places held per day for the next 8 weeks, as a heat map: the
        suites' and clinics' bookings, and the lab's expected occupancy (the expansion days
        held by every chain booked)."""
        if not self.has_view_permission(request):
            raise PermissionDenied("You may not see the resources.")
        today = timezone.localdate()
        context = self.admin_site.each_context(request) | {
            "title": "Capacity, the next 8 weeks",
            "opts": self.model._meta,
            "uses": capacity_by_day(
                resources=self.get_queryset(request).select_related("site"), first_day=today
            ),
            "today": today,
            "weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
        }
        return TemplateResponse(request, "scheduling/capacity.html", context)

    def get_queryset(self, request):
        resources = super().get_queryset(request)
        if user_sees_all_sites(request.user):
            return resources
        return resources.filter(Q(site__in=user_sites(request.user)) | Q(site__isnull=True))

    def get_object(self, request, object_id, from_field=None):
        resource = super().get_object(request, object_id, from_field)
        if resource is None:
            raise Http404("No such resource at your sites.")
        return resource

    @staticmethod
    def _runs_the_lab(user) -> bool:
        return user_sees_all_sites(user) or user.groups.filter(name="lab").exists()

    def has_change_permission(self, request, obj=None):
        allowed = super().has_change_permission(request, obj)
        if allowed and obj is not None and obj.site_id is None:
            return self._runs_the_lab(request.user)
        return allowed

    def get_form(self, request, obj=None, change=False, **kwargs):
        """Only the lab makes lab capacity: a site's own "expansion capacity" would take its
        courses off the lab's real limit."""
        form = super().get_form(request, obj, change, **kwargs)
        if not self._runs_the_lab(request.user) and "kind" in form.base_fields:
            form.base_fields["kind"].choices = [
                (value, label) for value, label in ResourceKind.choices if value not in LAB_KINDS
            ]
        return form


@admin.register(AlertRoute)
class AlertRouteAdmin(SiteScopedAdmin, admin.ModelAdmin):
    """Who hears of each kind of alert besides the coordinator. A site's own routes for a
    kind replace the defaults (no site) for that kind."""

    list_display = ("kind", "group", "site")
    list_filter = ("kind", "site")
    list_select_related = ("group", "site")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        # Only someone who sees every site may set a default for every site.
        form.base_fields["site"].required = not user_sees_all_sites(request.user)
        return form


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
        "raised",
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
    fields = (
        "kind",
        "severity",
        "site",
        "course",
        "enquiry",
        "visit",
        "message",
        "created_at",
        "acknowledged_by",
        "acknowledged_at",
        "acknowledged_note",
        "snoozed_until",
    )
    readonly_fields = fields
    actions = ["acknowledge"]
    change_form_template = "scheduling/alert_change_form.html"

    def get_queryset(self, request):
        """Only the alerts the user may act on: a lab user sees no clinical alert."""
        return super().get_queryset(request).filter(alerts_for(request.user))

    @admin.display(description="raised (the site's time)", ordering="created_at")
    def raised(self, obj):
        return local_words(obj.created_at, obj.site.time_zone)

    def has_add_permission(self, request):
        return False

    def get_urls(self):
        return [
            path(
                "<path:object_id>/acknowledge/",
                self.admin_site.admin_view(self.acknowledge_view),
                name="scheduling_alert_acknowledge",
            ),
            path(
                "<path:object_id>/snooze/",
                self.admin_site.admin_view(self.snooze_view),
                name="scheduling_alert_snooze",
            ),
            *super().get_urls(),
        ]

    def _alert_to_change(self, request, object_id):
        if request.method != "POST":
            raise Http404("Acknowledge or snooze from the alert's page.")
        alert = (
            Alert.objects.select_related("site")
            .filter(
                pk=object_id if str(object_id).isdecimal() and len(str(object_id)) < 19 else None
            )
            .first()
        )
        if alert is None or not scope(Alert.objects.filter(pk=alert.pk), request.user).exists():
            raise Http404("No such alert at your sites.")
        if not self.has_change_permission(request, alert) or not alert_may_act(
            user=request.user, alert=alert
        ):
            raise PermissionDenied(
                f"This alert is for the {alert_roles_words(alert=alert)} roles: yours may not "
                "acknowledge it."
            )
        return alert

    def _back(self, request, alert):
        """Back to where the button was (the worklist, the dashboard), if it is ours."""
        back = request.POST.get("next", "")
        if back and url_has_allowed_host_and_scheme(
            back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return redirect(back)
        return redirect("admin:scheduling_alert_change", object_id=alert.pk)

    def acknowledge_view(self, request, object_id):
        alert = self._alert_to_change(request, object_id)
        note = request.POST.get("note", "")[:2000]
        if alert_acknowledge(alert=alert, by=request.user, note=note):
            self.message_user(request, f"Acknowledged: {alert}.", messages.SUCCESS)
        else:
            alert.refresh_from_db()
            when = timezone.localtime(alert.acknowledged_at, alert.site.time_zone)
            self.message_user(
                request,
                f"Not acknowledged again: {alert.acknowledged_by} already had, "
                f"{local_words(when)}.",
                messages.WARNING,
            )
        return self._back(request, alert)

    def snooze_view(self, request, object_id):
        alert = self._alert_to_change(request, object_id)
        span = SNOOZE_CHOICES.get(request.POST.get("for", ""))
        if span is None:
            self.message_user(request, "Choose how long to snooze it for.", messages.ERROR)
            return self._back(request, alert)
        until = timezone.now() + span
        if alert_snooze(alert=alert, by=request.user, until=until):
            when = timezone.localtime(until, alert.site.time_zone)
            self.message_user(
                request,
                f"Snoozed until {local_words(when)}: off the worklist until then, still open.",
                messages.SUCCESS,
            )
        else:
            self.message_user(request, "It was acknowledged already.", messages.WARNING)
        return self._back(request, alert)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra = (extra_context or {}) | {"snooze_choices": SNOOZE_WORDS}
        return super().change_view(request, object_id, form_url, extra)

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Acknowledge selected alerts", permissions=["change"])
    def acknowledge(self, request, queryset):
        done, refused = 0, []
        for alert in queryset:
            try:
                done += alert_acknowledge(alert=alert, by=request.user)
            except Refused as refusal:
                refused.append(f"{alert}: {refusal}")
        if done:
            self.message_user(request, f"{done} alert(s) acknowledged.", messages.SUCCESS)
        elif not refused:
            self.message_user(request, "None acknowledged: someone already had.", messages.WARNING)
        for words in refused:
            self.message_user(request, f"Not acknowledged: {words}", messages.ERROR)


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ("at", "succeeded", "error", "provider_message_id")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Notification)
class NotificationAdmin(ZonedTimesAdmin, admin.ModelAdmin):
    list_display = (
        "send_after",
        "template",
        "channel",
        "patient",
        "consultation",
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
        # An enquirer's messages only for whoever works on enquiries (never the lab).
        enquirers = (
            Q(enquiry__site__in=sites) | Q(consultation__enquiry__site__in=sites)
            if request.user.has_perm("enquiries.view_enquiry")
            else Q(pk__in=[])
        )
        return queryset.filter(
            Q(patient__site__in=sites)
            | Q(alert__site__in=sites)
            | Q(report_site__in=sites)
            | enquirers
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


@admin.register(NotificationArchive)
class NotificationArchiveAdmin(ZonedTimesAdmin, ReadOnlyAdmin, admin.ModelAdmin):
    """Notifications settled longer ago than NOTIFICATION_ARCHIVE_AFTER_DAYS, moved out of the
    outbox by `scheduling/outbox_archive.py` (the Notification list shows the outbox). Read
    only: the archive is a record. Purged rows name no patient."""

    list_display = (
        "settled_at",
        "template",
        "channel",
        "site",
        "patient",
        "user",
        "status",
        "attempts",
        "purged_at",
    )
    list_select_related = ("site", "patient", "user")
    list_filter = ("status", "channel", "template")
    search_fields = ("=patient__mrn", "=idempotency_key")
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    ordering = ("-id",)

    def get_queryset(self, request):
        """Rows of the user's sites, and their own mail."""
        queryset = super().get_queryset(request)
        if user_sees_all_sites(request.user):
            return queryset
        return queryset.filter(
            Q(site__in=user_sites(request.user).values("pk")) | Q(user=request.user)
        )

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("No such notification for you.")
        return obj


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
class CalendarFeedTokenAdmin(ZonedTimesAdmin, admin.ModelAdmin):
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
        return public_url_for("calendar-feed", token)

    def _show_links(self, request, links):
        context = {
            **self.admin_site.each_context(request),
            "title": "Your new calendar link" if len(links) == 1 else "Your new calendar links",
            "links": links,
        }
        return TemplateResponse(request, "reporting/calendar_links_issued.html", context)

    def response_add(self, request, obj, post_url_continue=None):
        return self._show_links(request, [(obj.site, request.issued_calendar_link)])

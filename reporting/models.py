from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


class FollowUpOutcome(models.Model):
    """One done follow-up's change from baseline in every measure, stored when it is measured.

    The weekly report aggregates these rows instead of working out each change again with
    twelve correlated subqueries per visit (50 s across a national programme). They are
    written by `reporting.outcomes.follow_up_outcomes_refresh`, through the same SQL
    expressions, whenever a measurement, a visit or a transplant date changes, and rebuilt in
    full by `manage.py follow_up_outcomes_rebuild`.
    """

    visit = models.OneToOneField(
        "scheduling.Visit", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    course = models.ForeignKey(
        "pathway.TreatmentCourse", on_delete=models.CASCADE, related_name="+"
    )
    site = models.ForeignKey("patients.Site", on_delete=models.CASCADE, related_name="+")
    protocol_visit = models.ForeignKey(
        "pathway.ProtocolVisit", on_delete=models.CASCADE, null=True, related_name="+"
    )
    done_at = models.DateTimeField(null=True)
    dlco_relative_pct = models.FloatField(null=True)
    dlco_pct_points = models.FloatField(null=True)
    fev1_ml = models.FloatField(null=True)
    walk_m = models.FloatField(null=True)
    cat = models.FloatField(null=True)
    mmrc = models.FloatField(null=True)
    crp_mg_l = models.FloatField(null=True)

    class Meta:
        indexes = [models.Index(fields=["site", "done_at"], name="follow_up_outcome_site_idx")]

    def __str__(self) -> str:
        return f"Outcomes of visit {self.visit_id}"


class WeeklyFigures(models.Model):
    """A closed week's report, worked out once and kept: what the report said when the week
    was over.

    Opening a week's report reads this row instead of working the figures out again from a
    national programme's rows (seconds, growing with the programme). A late correction to
    the week's data reaches the kept figures only when someone asks for them to be worked
    out again (the report page's button, or `manage.py weekly_report --recompute`); the
    report says when its figures were worked out.
    """

    week = models.CharField(max_length=8)
    site = models.ForeignKey(
        "patients.Site", on_delete=models.CASCADE, null=True, related_name="+"
    )  # none: all sites
    computed_at = models.DateTimeField()
    figures = models.JSONField(encoder=DjangoJSONEncoder)

    class Meta:
        verbose_name_plural = "weekly figures"
        constraints = [
            models.UniqueConstraint(fields=["week", "site"], name="weekly_figures_unique"),
            # NULLs are distinct in a unique index: all sites' row needs its own.
            models.UniqueConstraint(
                fields=["week"],
                condition=models.Q(site__isnull=True),
                name="weekly_figures_all_sites_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"Week {self.week}, {self.site or 'all sites'}"

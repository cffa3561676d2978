"""The lab sees, and is told of, the manufacturing alerts it can act on: the cells may not
reach the dose in time, or may be ready after the provisional transplant. With the routes
already there (expansions past their last day and broken cold chains to the lab; adverse
events, COI mismatches, falls in lung function and patients' answers to the clinicians),
each alert kind names the roles that see and acknowledge it; coordinators see every alert of
their sites."""

from django.db import migrations

from patients.role_migrations import grant

MANUFACTURING = ("growth_shortfall", "forecast_past_transplant")


def lab_routes(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    AlertRoute = apps.get_model("scheduling", "AlertRoute")
    lab, _ = Group.objects.get_or_create(name="lab")
    for kind in MANUFACTURING:
        AlertRoute.objects.get_or_create(kind=kind, group=lab, site=None)
    # Clinicians act on the clinical alerts they see: they acknowledge them too.
    grant(apps, {"clinician": ["scheduling.change_alert"]})


def no_lab_routes(apps, schema_editor):
    apps.get_model("scheduling", "AlertRoute").objects.filter(
        kind__in=MANUFACTURING, group__name="lab", site=None
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0032_visit_done_at_index"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(lab_routes, no_lab_routes)]

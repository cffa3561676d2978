"""The auditor: reads everything at every site, changes nothing."""

from django.db import migrations

from patients.role_migrations import create_all_permissions

APPS = ("patients", "pathway", "scheduling")


def create(apps, schema_editor):
    create_all_permissions(apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    auditor, _ = Group.objects.get_or_create(name="auditor")
    auditor.permissions.add(
        *Permission.objects.filter(content_type__app_label__in=APPS, codename__startswith="view_")
    )


class Migration(migrations.Migration):
    dependencies = [
        ("pathway", "0010_manufacturing_permissions"),
        ("scheduling", "0009_weekly_reports_schedule_and_leads"),
        ("patients", "0004_site_members"),
    ]

    operations = [migrations.RunPython(create, migrations.RunPython.noop)]

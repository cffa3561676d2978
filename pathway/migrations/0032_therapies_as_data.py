"""The second therapy of the seed as data: every protocol written before there were two gives
the P63+ cells; the published figures are each therapy's own; each role may take its MSC
steps; and the new alert kinds are heard by whoever can act on them (lot alerts by the lab,
infusion reactions by the clinicians). A site that gives MSC infusions adds its protocol
(`pathway/services.py: protocol_create`, or the protocol admin with the therapy chosen), with
SPEC's Therapy 2 defaults."""

from decimal import Decimal

from django.db import migrations

from patients.role_migrations import create_all_permissions, grant

# The 2022 meta-analysis (11 studies, 371 patients) is of MSC trials: its figures stand beside
# the MSC outcomes. The P63+ outcomes keep the figures they were shown with until now.
META_ANALYSIS = "2022 meta-analysis, 11 studies, 371 patients"
MSC_FIGURES = [("walk_m", Decimal("52")), ("fev1_ml", Decimal("71"))]

ROLE_PERMISSIONS = {
    "coordinator": [
        "pathway.allocate_product_course",
        "pathway.schedule_infusion_course",
        "pathway.view_cellbanklot",
        "pathway.view_productunit",
        "pathway.view_infusion",
        "pathway.view_vitalsigns",
        "patients.view_creactiveprotein",
    ],
    "clinician": [
        "pathway.record_infusion_course",
        "pathway.view_cellbanklot",
        "pathway.view_productunit",
        "pathway.view_infusion",
        "pathway.view_vitalsigns",
        "patients.add_creactiveprotein",
        "patients.change_creactiveprotein",
        "patients.view_creactiveprotein",
    ],
    "lab": [
        "pathway.add_cellbanklot",
        "pathway.change_cellbanklot",
        "pathway.view_cellbanklot",
        "pathway.release_lot",
        "pathway.view_productunit",
    ],
    "programme lead": [
        "pathway.view_cellbanklot",
        "pathway.view_infusion",
        "patients.view_creactiveprotein",
    ],
}
# Alert kind → the roles that hear of it by default (coordinators hear of every alert).
ROUTES = {
    "lot_expires_allocated": ["lab"],
    "stock_short": ["lab"],
    "infusion_reaction": ["clinician"],
}


def forwards(apps, schema_editor):
    Protocol = apps.get_model("pathway", "Protocol")
    ReferenceFigure = apps.get_model("pathway", "ReferenceFigure")
    Protocol.objects.update(therapy="p63")
    ReferenceFigure.objects.filter(kind="reported").update(therapy="p63")
    for measure, value in MSC_FIGURES:
        ReferenceFigure.objects.get_or_create(
            measure=measure,
            weeks_after_transplant=None,
            kind="reported",
            therapy="msc",
            defaults={"value": value, "source": META_ANALYSIS},
        )
    grant(apps, ROLE_PERMISSIONS)
    # The auditor reads everything, the new records too.
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    create_all_permissions(apps)
    auditor, _ = Group.objects.get_or_create(name="auditor")
    auditor.permissions.add(
        *Permission.objects.filter(
            content_type__app_label__in=("patients", "pathway"),
            content_type__model__in=(
                "cellbanklot",
                "productunit",
                "infusion",
                "vitalsigns",
                "creactiveprotein",
            ),
            codename__startswith="view_",
        )
    )
    AlertRoute = apps.get_model("scheduling", "AlertRoute")
    for kind, roles in ROUTES.items():
        for role in roles:
            group, _ = Group.objects.get_or_create(name=role)
            AlertRoute.objects.get_or_create(kind=kind, group=group, site=None)


def backwards(apps, schema_editor):
    apps.get_model("scheduling", "AlertRoute").objects.filter(
        kind__in=list(ROUTES), site=None
    ).delete()
    apps.get_model("pathway", "ReferenceFigure").objects.filter(therapy="msc").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("pathway", "0031_msc_therapy_lots_and_infusions"),
        ("patients", "0017_crp_and_fitness_for_infusion"),
        ("scheduling", "0037_infusion_visits_chairs_and_stock_alerts"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]

"""The staff roles as groups, each with the permissions its work needs."""

from django.db import migrations

from patients.role_migrations import grant

ROLE_PERMISSIONS = {
    "coordinator": [
        "patients.view_site",
        "patients.add_patient", "patients.change_patient", "patients.view_patient",
        "patients.view_bodymeasurement", "patients.add_bodymeasurement",
        "patients.view_lungfunctiontest", "patients.view_chestct",
        "patients.view_clinicalassessment",
        "pathway.view_protocol", "pathway.view_protocolvisit",
        "pathway.add_treatmentcourse", "pathway.change_treatmentcourse",
        "pathway.view_treatmentcourse", "pathway.view_transitionlog",
        "pathway.start_evaluation_course", "pathway.schedule_harvest_course",
        "pathway.schedule_transplant_course", "pathway.complete_course",
        "pathway.hold_course", "pathway.resume_course", "pathway.withdraw_course",
        "scheduling.view_visit", "scheduling.change_visit",
    ],
    "clinician": [
        "patients.view_site", "patients.view_patient", "patients.change_patient",
        *(
            f"patients.{action}_{model}"
            for model in ("bodymeasurement", "lungfunctiontest", "chestct", "clinicalassessment")
            for action in ("add", "change", "view")
        ),
        "pathway.view_protocol", "pathway.view_protocolvisit",
        "pathway.change_treatmentcourse", "pathway.view_treatmentcourse",
        "pathway.view_transitionlog",
        "pathway.approve_course", "pathway.decline_course", "pathway.record_harvest_course",
        "pathway.record_transplant_course", "pathway.hold_course", "pathway.resume_course",
        "pathway.withdraw_course",
        "scheduling.view_visit", "scheduling.change_visit",
    ],
    "lab": [
        "pathway.view_protocol",
        "pathway.change_treatmentcourse", "pathway.view_treatmentcourse",
        "pathway.view_transitionlog",
        "pathway.receive_at_lab_course", "pathway.reject_sample_course",
        "pathway.fail_qc_course", "pathway.release_course",
    ],
}


def create_roles(apps, schema_editor):
    grant(apps, ROLE_PERMISSIONS)


class Migration(migrations.Migration):
    dependencies = [
        ("pathway", "0002_default_protocol"),
        ("patients", "0001_initial"),
        ("scheduling", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]

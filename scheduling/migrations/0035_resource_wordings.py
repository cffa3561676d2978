"""Resources get a name and an address for patients in each language; whoever keeps a
resource's calendar keeps its words too (0021), and auditors read them."""

import django.db.models.deletion
from django.db import migrations, models

from patients.role_migrations import grant

KEEP = [f"scheduling.{action}_resourcewording" for action in ("add", "change", "delete", "view")]


def grant_wordings(apps, schema_editor):
    grant(
        apps,
        {"coordinator": KEEP, "lab": KEEP, "auditor": ["scheduling.view_resourcewording"]},
    )


class Migration(migrations.Migration):

    dependencies = [
        ('scheduling', '0034_patient_request_wanted_at'),
    ]

    operations = [
        migrations.CreateModel(
            name='ResourceWording',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('language', models.CharField(choices=[('en', 'English'), ('es', 'Spanish'), ('zh-hans', 'Simplified Chinese')], max_length=10)),
                ('name', models.CharField(help_text='Where to go, in this language; no treatment, procedure or diagnosis.', max_length=200, verbose_name='name for patients')),
                ('address', models.TextField(blank=True, help_text='Building, floor, street and town, one per line, as patients read it.')),
                ('resource', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='wordings', to='scheduling.resource')),
            ],
            options={
                'verbose_name': 'name and address for patients',
                'verbose_name_plural': 'names and addresses for patients',
                'ordering': ['resource', 'language'],
                'constraints': [models.UniqueConstraint(fields=('resource', 'language'), name='resource_wording_one_per_language', violation_error_message='This resource has words in this language already.')],
            },
        ),
        migrations.RunPython(grant_wordings, migrations.RunPython.noop),
    ]

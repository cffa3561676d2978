"""What django-axes stored of failed signatures: the second person's password, in clear text.

Until pathway/signatures.py checked a signature without its form, axes stored the form of each
wrong signature (`axes_accessattempt.post_data`), masking only a field named `password`: a
wrong bedside password was readable as `second_person_password=…` in the axes admin. Every
password-like value stored (and the CSRF token beside it) is masked, as axes masks its own.
"""

import re

from django.db import migrations

# A line `key=value` of axes' stored query string, for a key that names a secret. A browser's
# password field cannot hold a line break, so a line is a whole value.
SECRET_LINE = re.compile(r"^(?P<key>[^=\n]*(?:pass|secret|token|csrf)[^=\n]*)=.*$", re.I | re.M)
MASK = "********************"  # axes' own


def _masked(text: str) -> str:
    return SECRET_LINE.sub(lambda m: f"{m['key']}={MASK}", text or "")


def mask_stored_secrets(apps, schema_editor):
    AccessAttempt = apps.get_model("axes", "AccessAttempt")
    for attempt in AccessAttempt.objects.only("post_data", "get_data").iterator():
        post_data, get_data = _masked(attempt.post_data), _masked(attempt.get_data)
        if (post_data, get_data) != (attempt.post_data, attempt.get_data):
            AccessAttempt.objects.filter(pk=attempt.pk).update(
                post_data=post_data, get_data=get_data
            )


class Migration(migrations.Migration):
    dependencies = [
        ("pathway", "0029_protocol_limits_are_measures"),
        ("axes", "0010_accessattemptexpiration"),
    ]

    operations = [migrations.RunPython(mask_stored_secrets, migrations.RunPython.noop)]

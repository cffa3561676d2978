"""The WhatsApp templates the tracker's messages need, in each of its languages: their words
to submit for approval in the provider's console, and which of the message's words fill each
placeholder. Not approved and without a ContentSid: the provider gives the ContentSid and
WhatsApp approves it; an administrator then enters it and ticks approved."""

from django.db import migrations

REMINDER = {
    "1": "first_name",
    "2": "clinic",
    "3": "what",
    "4": "date",
    "5": "time",
    "6": "place_line",
    "7": "preparation",
    "8": "link",
    "9": "contact",
}
QUESTIONNAIRE = {"1": "first_name", "2": "clinic", "3": "link", "4": "until"}
TEMPLATES = [
    (
        "visit_reminder",
        "en",
        "Hi {{1}}, a reminder from {{2}}: {{3}} on {{4}} at {{5}}, {{6}}. {{7}} "
        "Confirm or ask for another time: {{8}} Questions: {{9}}.",
        REMINDER,
    ),
    (
        "visit_reminder",
        "es",
        "Hola {{1}}, le recordamos de parte de {{2}}: {{3}} el {{4}} a las {{5}}, {{6}}. {{7}} "
        "Confirme o pida otra hora: {{8}} Preguntas: {{9}}.",
        REMINDER,
    ),
    (
        "visit_reminder",
        "zh-hans",
        "您好，{{1}}。{{2}}提醒您：{{3}}，时间 {{4}} {{5}}，地点 {{6}}。{{7}} "
        "确认或改约：{{8}} 咨询：{{9}}。",
        REMINDER,
    ),
    (
        "questionnaire",
        "en",
        "Hi {{1}}, {{2}} asks a few short questions about how you are: {{3}} (open until {{4}}).",
        QUESTIONNAIRE,
    ),
    (
        "questionnaire",
        "es",
        "Hola {{1}}, {{2}} le hace unas preguntas breves sobre cómo se encuentra: {{3}} "
        "(abierto hasta {{4}}).",
        QUESTIONNAIRE,
    ),
    (
        "questionnaire",
        "zh-hans",
        "您好，{{1}}。{{2}}想请您回答几个关于近况的简短问题：{{3}}（{{4}}前有效）。",
        QUESTIONNAIRE,
    ),
]


def seed(apps, schema_editor):
    WhatsAppTemplate = apps.get_model("delivery", "WhatsAppTemplate")
    for name, language, body, variables in TEMPLATES:
        WhatsAppTemplate.objects.get_or_create(
            name=name, language=language, defaults={"body": body, "variables": variables}
        )


def unseed(apps, schema_editor):
    WhatsAppTemplate = apps.get_model("delivery", "WhatsAppTemplate")
    for name, language, _, _ in TEMPLATES:
        WhatsAppTemplate.objects.filter(name=name, language=language, content_sid="").delete()


class Migration(migrations.Migration):
    dependencies = [("delivery", "0002_whatsapp_templates")]

    operations = [migrations.RunPython(seed, unseed)]

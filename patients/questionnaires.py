"""Questionnaires as data: an instrument's items, their answers, how it is scored and when a
score needs a clinician.

A definition is plain JSON:

    {
      "items": [{"code": "q1", "text": {"en": "...", "es": "...", "zh-hans": "..."},
                 "options": [{"value": 0, "text": {"en": "..."}}, ...]}, ...],
      "scoring": "sum" | "single" | "any",
      "threshold": 10,          # a score at or past it alerts a clinician (or null)
      "alert_items": ["visit"], # items that alert whenever answered yes (optional)
      "mcid": 2,                # the minimal clinically important difference (or null)
      "higher_is_worse": true
    }

"sum" adds the answers' values (the CAT's way), "single" is the one item's value (mMRC), and
"any" counts the items answered with a non-zero value (a diary's "did this happen?"), which
alerts when it reaches the threshold. A licensed instrument (the CAT, the SGRQ) is loaded by a
site under its own licence (`manage.py instrument_load`); only the scoring ships here.
"""

from dataclasses import dataclass
from decimal import Decimal

SCORINGS = ("sum", "single", "any")


def definition_errors(definition) -> list[str]:
    """What is wrong with a definition, in words; empty if it can be used."""
    if not isinstance(definition, dict):
        return ["A definition is a JSON object."]
    items = definition.get("items")
    if not isinstance(items, list) or not items:
        return ["A definition has a list of items."]
    errors = []
    codes = set()
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            errors.append(f"Item {n} is not an object.")
            continue
        code = item.get("code")
        if not isinstance(code, str) or not code or code in codes:
            errors.append(f"Item {n} needs a code of its own.")
        codes.add(code)
        if not isinstance(item.get("text"), dict) or not item["text"].get("en"):
            errors.append(f"Item {n} needs its text in English at least.")
        options = item.get("options")
        if not isinstance(options, list) or len(options) < 2:
            errors.append(f"Item {n} needs two answers or more.")
            continue
        values = [option.get("value") for option in options if isinstance(option, dict)]
        if len(values) != len(options) or not all(isinstance(v, int) for v in values):
            errors.append(f"Item {n}: every answer has a whole-number value.")
        elif not all(
            isinstance(option.get("text"), dict) and option["text"].get("en") for option in options
        ):
            errors.append(f"Item {n}: every answer needs its words in English at least.")
    if definition.get("scoring") not in SCORINGS:
        errors.append(f"Scoring is one of {', '.join(SCORINGS)}.")
    if definition.get("scoring") == "single" and len(items) != 1:
        errors.append('"single" scoring is for an instrument of one item.')
    for key in ("threshold", "mcid"):
        if definition.get(key) is not None and not isinstance(definition[key], int | float):
            errors.append(f"{key} is a number or null.")
    return errors


@dataclass(frozen=True)
class Score:
    value: Decimal
    needs_clinician: bool  # at or past the threshold


def answers_errors(definition: dict, answers) -> list[str]:
    """Whether `answers` ({item code: value}) answer every item with one of its values."""
    if not isinstance(answers, dict):
        return ["Answers are an object."]
    errors = []
    for item in definition["items"]:
        allowed = {option["value"] for option in item["options"]}
        if answers.get(item["code"]) not in allowed:
            errors.append(f"Answer: {item['text']['en']}")
    return errors


def questionnaire_score(definition: dict, answers: dict) -> Score:
    """The score of complete answers (check them with `answers_errors` first)."""
    values = [answers[item["code"]] for item in definition["items"]]
    scoring = definition["scoring"]
    if scoring == "sum":
        value = sum(values)
    elif scoring == "single":
        value = values[0]
    else:  # "any": how many things happened
        value = sum(1 for v in values if v)
    threshold = definition.get("threshold")
    worse = definition.get("higher_is_worse", True)
    needs = threshold is not None and (value >= threshold if worse else value <= threshold)
    needs = needs or any(answers.get(code) for code in definition.get("alert_items", ()))
    return Score(Decimal(value), needs)


def text_in(texts: dict, language: str) -> str:
    """An item's or answer's words in the patient's language, else English."""
    return texts.get(language) or texts.get(language.split("-")[0]) or texts["en"]


def change_is_important(definition: dict, *, baseline, latest) -> bool | None:
    """Whether the change from baseline reaches the instrument's MCID (None without one)."""
    mcid = definition.get("mcid")
    if mcid is None or baseline is None or latest is None:
        return None
    return abs(Decimal(latest) - Decimal(baseline)) >= Decimal(str(mcid))


def _yes_no(code: str, en: str, es: str, zh: str) -> dict:
    return {
        "code": code,
        "text": {"en": en, "es": es, "zh-hans": zh},
        "options": [
            {"value": 0, "text": {"en": "No", "es": "No", "zh-hans": "没有"}},
            {"value": 1, "text": {"en": "Yes", "es": "Sí", "zh-hans": "有"}},
        ],
    }


# Shipped, in our own words. Grades as the mMRC scale has them.
MMRC = {
    "items": [
        {
            "code": "grade",
            "text": {
                "en": "Which sentence describes your breathing best?",
                "es": "¿Qué frase describe mejor su respiración?",
                "zh-hans": "哪一句最能描述您的呼吸情况？",
            },
            "options": [
                {
                    "value": 0,
                    "text": {
                        "en": "I only get breathless with hard exercise.",
                        "es": "Solo me falta el aire con ejercicio intenso.",
                        "zh-hans": "只有在剧烈运动时才会气短。",
                    },
                },
                {
                    "value": 1,
                    "text": {
                        "en": (
                            "I get short of breath hurrying on the flat "
                            "or walking up a slight hill."
                        ),
                        "es": (
                            "Me falta el aire al andar deprisa en llano o "
                            "al subir una cuesta suave."
                        ),
                        "zh-hans": "在平地快走或走上小坡时会气短。",
                    },
                },
                {
                    "value": 2,
                    "text": {
                        "en": (
                            "On the flat I walk slower than people my age, or "
                            "stop for breath at my own pace."
                        ),
                        "es": (
                            "En llano camino más despacio que la gente de mi "
                            "edad, o paro a respirar a mi ritmo."
                        ),
                        "zh-hans": "在平地上我比同龄人走得慢，或按自己的速度走也要停下来喘气。",
                    },
                },
                {
                    "value": 3,
                    "text": {
                        "en": (
                            "I stop for breath after about 100 metres, or "
                            "a few minutes, on the flat."
                        ),
                        "es": "Paro a respirar tras unos 100 metros, o unos minutos, en llano.",
                        "zh-hans": "在平地走约100米或几分钟后就要停下来喘气。",
                    },
                },
                {
                    "value": 4,
                    "text": {
                        "en": "I am too breathless to leave the house, or breathless dressing.",
                        "es": (
                            "Me falta tanto el aire que no salgo de casa, o me falta al vestirme."
                        ),
                        "zh-hans": "气短到无法出门，或穿衣服时也会气短。",
                    },
                },
            ],
        }
    ],
    "scoring": "single",
    "threshold": 4,
    "mcid": 1,
    "higher_is_worse": True,
}

EXACERBATION_DIARY = {
    "items": [
        _yes_no(
            "breathless",
            "This week, has your breathing been worse than usual?",
            "Esta semana, ¿ha respirado peor que de costumbre?",
            "这一周，您的呼吸是否比平时更差？",
        ),
        _yes_no(
            "sputum",
            "Have you coughed up more phlegm than usual?",
            "¿Ha expulsado más flemas que de costumbre?",
            "您咳出的痰是否比平时多？",
        ),
        _yes_no(
            "colour",
            "Has your phlegm changed colour (yellow, green or brown)?",
            "¿Han cambiado de color sus flemas (amarillas, verdes o marrones)?",
            "您的痰颜色是否有变化（黄色、绿色或褐色）？",
        ),
        _yes_no(
            "medicine",
            "Have you needed extra medicine for your chest (tablets or more inhaler)?",
            "¿Ha necesitado más medicación para el pecho (pastillas o más inhalador)?",
            "您是否需要额外的胸部用药（药片或更多吸入剂）？",
        ),
        _yes_no(
            "visit",
            "Have you seen a doctor or gone to hospital for your chest, unplanned?",
            "¿Ha ido al médico o al hospital por el pecho sin tenerlo previsto?",
            "您是否因胸部问题临时看医生或去医院？",
        ),
    ],
    "scoring": "any",
    # Two of the three signs (breathing, phlegm, its colour) make an exacerbation; extra
    # medicine or an unplanned visit is one already.
    "threshold": 2,
    "alert_items": ["medicine", "visit"],
    "mcid": None,
    "higher_is_worse": True,
}

SHIPPED = {
    "mmrc": ("mMRC breathlessness", MMRC),
    "exacerbation-diary": ("Weekly chest diary", EXACERBATION_DIARY),
}

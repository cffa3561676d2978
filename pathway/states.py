from django.db import models


class Therapy(models.TextChoices):
    """What a protocol gives: each therapy has its own steps between eligibility and follow-up
    (`pathway/therapies.py`), and shares the rest of the pathway."""

    P63 = "p63", "Autologous P63+ airway progenitor cells (bronchoscopic transplant)"
    MSC = "msc", "Allogeneic mesenchymal stem cells (intravenous infusion)"


class CourseState(models.TextChoices):
    REFERRED = "referred", "Referred"
    EVALUATION = "evaluation", "In evaluation"
    ELIGIBLE = "eligible", "Eligible"
    INELIGIBLE = "ineligible", "Ineligible"
    HARVEST_SCHEDULED = "harvest_scheduled", "Harvest scheduled"
    HARVESTED = "harvested", "Harvested"
    EXPANDING = "expanding", "Expanding"
    RELEASED = "released", "Released"
    TRANSPLANT_SCHEDULED = "transplant_scheduled", "Transplant scheduled"
    PRODUCT_ALLOCATED = "product_allocated", "Product allocated"
    INFUSION_SCHEDULED = "infusion_scheduled", "Infusion scheduled"
    INFUSED = "infused", "Infused, doses to come"
    FOLLOW_UP = "follow_up", "Follow-up"
    COMPLETED = "completed", "Completed"
    ON_HOLD = "on_hold", "On hold"
    WITHDRAWN = "withdrawn", "Withdrawn"


FINAL_STATES = (CourseState.INELIGIBLE, CourseState.COMPLETED, CourseState.WITHDRAWN)

# States a course can be put on hold from, and so resumed back into.
HOLDABLE_STATES = tuple(
    state for state in CourseState if state not in FINAL_STATES and state != CourseState.ON_HOLD
)

# A course can be withdrawn from any state that is not final, on hold included.
WITHDRAWABLE_STATES = (*HOLDABLE_STATES, CourseState.ON_HOLD)

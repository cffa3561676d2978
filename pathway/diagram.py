"""The pathway's state diagram, generated from the transitions in the code."""

import graphviz
from django_fsm.management.commands.graph_transitions import generate_dot, node_name

from pathway.models import TreatmentCourse
from pathway.states import HOLDABLE_STATES, CourseState

# Hold and withdraw leave any open state, resume goes back to one: each is drawn once, to or
# from one box, instead of a dozen arrows.
DRAWN_ONCE = ("hold", "resume", "withdraw")


def pathway_dot() -> str:
    """The Graphviz source of the diagram: django-fsm-2's `graph_transitions` for the main path
    (its node and edge lines sorted, as it emits them in set order), plus hold, resume and
    withdraw drawn once."""
    field = TreatmentCourse._meta.get_field("state")
    generated = generate_dot([(field, TreatmentCourse)], ignore_transitions=DRAWN_ONCE)
    lines = generated.source.splitlines()
    opening, statements, closing = lines[:3], sorted(lines[3:-2]), lines[-2:]

    def node(state: CourseState) -> str:
        return node_name(field, state)

    extra = graphviz.Digraph()
    extra.node("start", label="", shape="point")
    extra.edge("start", node(CourseState.REFERRED))
    extra.node(node(CourseState.ON_HOLD), label=CourseState.ON_HOLD.label, shape="circle")
    extra.node(node(CourseState.WITHDRAWN), label=CourseState.WITHDRAWN.label, shape="doublecircle")
    extra.node(
        "open",
        label=f"any of the {len(HOLDABLE_STATES)} open states",
        shape="box",
        style="dashed",
    )
    extra.edge("open", node(CourseState.ON_HOLD), label="hold")
    extra.edge(
        node(CourseState.ON_HOLD), "open", label="resume (to the state it left)", style="dashed"
    )
    extra.edge("open", node(CourseState.WITHDRAWN), label="withdraw")
    extra.edge(node(CourseState.ON_HOLD), node(CourseState.WITHDRAWN), label="withdraw")
    added = ["\t" + line for line in extra.source.splitlines()[1:-1]]
    return "\n".join([*opening, *statements, *added, *closing]) + "\n"

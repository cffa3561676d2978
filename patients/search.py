"""Finding a patient the way people type: "William Chen", "chen will", or an MRN's first
characters.

Each word must match the start of the first name, the last name or the MRN, in any order
and any case. Every test is a prefix match on UPPER(column), which PostgreSQL answers from a
`varchar_pattern_ops` index on that expression (migrations 0007 and 0009): no `LIKE '%…%'`
scan of the table, however big it grows.
"""

from django.db.models import Q

# Enough for a full name with a middle one; longer input is cut, not searched.
MAX_WORDS, MAX_WORD = 4, 40


def patients_matching(queryset, query: str, *, path: str = "", or_exactly: Q | None = None):
    """`queryset` narrowed to the patients `query` names. `path` leads from its rows to the
    patient ("patient__" on a list of courses). `or_exactly` is another way the whole query
    may match (a chain-of-identity id, on the lists that have one)."""
    words = [word[:MAX_WORD] for word in query.split()[:MAX_WORDS]]
    if not words:
        return queryset
    every_word = Q()
    for word in words:
        every_word &= (
            Q(**{f"{path}last_name__istartswith": word})
            | Q(**{f"{path}first_name__istartswith": word})
            | Q(**{f"{path}mrn__istartswith": word})
        )
    return queryset.filter(every_word | or_exactly if or_exactly is not None else every_word)

"""Finding a patient the way people type: "William Chen", "chen will", or an MRN's first
characters; and, when that finds no one, the patients whose names are close to what was
typed ("elizbeth": Elizabeth Moore).

Each word must match the start of the first name, the last name or the MRN, in any order
and any case. Every test is a prefix match on UPPER(column), which PostgreSQL answers from a
`varchar_pattern_ops` index on that expression (migrations 0007 and 0009): no `LIKE '%…%'`
scan of the table, however big it grows.

Close matches are PostgreSQL's `pg_trgm`: each word is the start of, or similar to (the `%`
operator: more than `pg_trgm.similarity_threshold`, 0.3 by default, of their trigrams shared)
the first name, the last name or (a word with a digit) the MRN, read from GIN trigram indexes
(migration 0015). Other databases offer none.
"""

import operator
from functools import reduce

from django.contrib.postgres.lookups import TrigramSimilar
from django.contrib.postgres.search import TrigramSimilarity
from django.db import connections
from django.db.models import F, Q, Value
from django.db.models.functions import Greatest

# Enough for a full name with a middle one; longer input is cut, not searched.
MAX_WORDS, MAX_WORD = 4, 40
# How many close matches are offered, the closest first.
CLOSE_MATCHES = 5
NAME_COLUMNS = ("first_name", "last_name", "mrn")


def _words(query: str) -> list[str]:
    return [word[:MAX_WORD] for word in query.split()[:MAX_WORDS]]


def _any_of(conditions) -> Q:
    return reduce(operator.or_, map(Q, conditions))


def _starts(word: str, path: str = "") -> Q:
    """The first name, the last name or the MRN starts with `word`, in any case."""
    return _any_of(Q(**{f"{path}{column}__istartswith": word}) for column in NAME_COLUMNS)


def _close(word: str) -> Q:
    """The first name or the last name is similar to `word` (pg_trgm's `%`), or, for a word
    with a digit in it, the MRN. (MRNs share their site's prefix and most of their digits:
    any word similar to one is similar to thousands, so a name is never looked for there.)"""
    columns = NAME_COLUMNS if any(c.isdigit() for c in word) else NAME_COLUMNS[:2]
    return _any_of(TrigramSimilar(F(column), Value(word)) for column in columns)


def patients_matching(queryset, query: str, *, path: str = "", or_exactly: Q | None = None):
    """`queryset` narrowed to the patients `query` names. `path` leads from its rows to the
    patient ("patient__" on a list of courses). `or_exactly` is another way the whole query
    may match (a chain-of-identity id, on the lists that have one)."""
    words = _words(query)
    if not words:
        return queryset
    every_word = Q()
    for word in words:
        every_word &= _starts(word, path)
    return queryset.filter(every_word | or_exactly if or_exactly is not None else every_word)


def patients_close_to(patients, query: str) -> list:
    """Up to `CLOSE_MATCHES` of `patients` (a queryset of patients, already narrowed to the
    user's sites) whose first name, last name or MRN each word of `query` starts or is close
    to, the closest first: for "did you mean", when `patients_matching` found no one. One
    query; none, and no patient, on a database without `pg_trgm`."""
    words = _words(query)
    if not words or connections[patients.db].vendor != "postgresql":
        return []
    every_word, closeness = Q(), []
    for word in words:
        every_word &= _starts(word) | _close(word)
        closeness.append(Greatest(*(TrigramSimilarity(column, word) for column in NAME_COLUMNS)))
    return list(
        patients.filter(every_word)
        .annotate(closeness=sum(closeness[1:], closeness[0]))
        .order_by("-closeness", "last_name", "first_name", "pk")
        .only("pk", "first_name", "last_name", "mrn", "site_id")[:CLOSE_MATCHES]
    )

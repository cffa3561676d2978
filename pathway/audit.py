"""Verifying the audit trail: each append-only table's hash chain, walked in the order its
rows were written. A row changed after it was written no longer matches its own hash; a row
removed or slipped in breaks the link to the row before it."""

import time
from dataclasses import dataclass

from pathway.models import CustodyEvent, TransitionLog, entry_content, entry_hash

CHAINED = (TransitionLog, CustodyEvent)


@dataclass
class ChainReport:
    table: str
    rows: int
    seconds: float
    first_break: str = ""  # empty when the chain holds
    head: str = ""  # the last row's hash: kept outside the database, it anchors the chain

    @property
    def intact(self) -> bool:
        return not self.first_break


def audit_chain_verify(model, *, chunk_size: int = 5000) -> ChainReport:
    """Walk one table's chain in id order; stop at the first broken link and name it."""
    started, rows, previous = time.perf_counter(), 0, ""
    table = model._meta.db_table
    for row in model.objects.order_by("id").iterator(chunk_size=chunk_size):
        rows += 1
        problem = ""
        if row.previous_hash != previous:
            problem = "does not follow the row before it: a row was removed, added or reordered"
        elif row.entry_hash != entry_hash(previous_hash=previous, content=entry_content(row)):
            problem = "was changed after it was written"
        if problem:
            return ChainReport(
                table, rows, time.perf_counter() - started, f"{table} row {row.pk} {problem}."
            )
        previous = row.entry_hash
    return ChainReport(table, rows, time.perf_counter() - started, head=previous)


def audit_verify() -> list[ChainReport]:
    return [audit_chain_verify(model) for model in CHAINED]

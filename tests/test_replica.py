"""Reading from a replica (common/replica.py): where reads and writes go. A real streaming
replica, lagging and down, is drilled in tests/test_ha.py."""

import pytest
from django.db import transaction
from django.utils import timezone

from common.replica import (
    REPLICA,
    ReadSource,
    ReplicaRouter,
    read_source,
    reading_from,
    replica_reads,
    replica_usable,
)
from pathway.models import TreatmentCourse

router = ReplicaRouter()


def test_without_a_replica_everything_reads_the_primary():
    with replica_reads(purpose="a test") as source:
        assert not source.from_replica and source.behind_seconds == 0
        assert router.db_for_read(TreatmentCourse) == "default"
    assert read_source(purpose="a test").alias == "default"


@pytest.mark.django_db
def test_inside_a_block_on_the_replica_reads_go_there_and_writes_never():
    on_replica = ReadSource(REPLICA, 0.4, timezone.now())
    with reading_from(on_replica):
        assert router.db_for_write(TreatmentCourse) == "default"
        with transaction.atomic():
            # A transaction on the primary is writing: its reads must see its own writes.
            assert router.db_for_read(TreatmentCourse) == "default"
    assert router.db_for_read(TreatmentCourse) == "default"  # and outside the block


def test_inside_a_block_reads_go_to_the_replica_outside_a_transaction():
    with reading_from(ReadSource(REPLICA, 0.4, timezone.now())):
        assert router.db_for_read(TreatmentCourse) == REPLICA
    assert router.db_for_read(TreatmentCourse) == "default"


@pytest.mark.parametrize(
    ("behind", "usable"), [(0.0, True), (59.9, True), (60.0, True), (60.1, False), (None, False)]
)
def test_a_replica_is_read_only_within_the_bound(behind, usable):
    assert replica_usable(behind_seconds=behind, bound_seconds=60) is usable


def test_migrations_run_on_the_primary_only():
    assert router.allow_migrate("default", "pathway")
    assert not router.allow_migrate(REPLICA, "pathway")


def test_data_read_is_as_old_as_the_replica_was_behind():
    now = timezone.now()
    source = ReadSource(REPLICA, 2.5, now)
    assert (now - source.data_as_of).total_seconds() == 2.5

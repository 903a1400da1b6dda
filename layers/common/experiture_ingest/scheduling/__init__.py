"""Start slots for import jobs: a queue in DynamoDB, granted in arrival order, one job per object.

- :mod:`~experiture_ingest.scheduling.policy`: the pure decision (who starts next) and the backoff;
- :mod:`~experiture_ingest.scheduling.table`: the DynamoDB table (entries, slots, locks, versions);
- :mod:`~experiture_ingest.scheduling.scheduler`: enqueue, dispatch, release and sweep over the table
  and Step Functions task tokens.
"""

from __future__ import annotations

from experiture_ingest.scheduling.policy import (
    Entry,
    arrival_order,
    group_of,
    padded_sequencer,
    plan_grants,
    refusal_backoff,
    sequencer_value,
    turn_id,
)
from experiture_ingest.scheduling.scheduler import (
    DispatchReport,
    Enqueue,
    QueueConflictError,
    QueueSettings,
    Scheduler,
    job_id_from_input,
)
from experiture_ingest.scheduling.table import (
    QueueEntry,
    QueueTable,
    QueueUnavailableError,
    SchedulingError,
)

__all__ = [
    "DispatchReport",
    "Enqueue",
    "Entry",
    "QueueConflictError",
    "QueueEntry",
    "QueueSettings",
    "QueueTable",
    "QueueUnavailableError",
    "Scheduler",
    "SchedulingError",
    "arrival_order",
    "group_of",
    "job_id_from_input",
    "padded_sequencer",
    "plan_grants",
    "refusal_backoff",
    "sequencer_value",
    "turn_id",
]

"""How the workflows call their activities: timeouts, retry policies and the record's batches.

Plain values, imported by workflow code inside the sandbox; the names are the contract's
(``ActivityName``). The workflow passes these as keyword arguments at each call.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import Priority, RetryPolicy

from workflows.contract import RELEASE_PRIORITY_KEY

# The record of a decision (``record``, a local activity): one database transaction and, on
# entering Pending Release, one call to the Temporal server. A longer wait means a stuck
# connection, better retried.
RECORD_TIMEOUT = timedelta(seconds=30)
# Retried until the database is back: the case store must converge, and every write is
# idempotent (upserts by the case's step, the outbox by the message's key).
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=0,  # unlimited
)
# Retries within one workflow task up to this long; later ones wait on a durable timer, so an
# outage of hours costs a few events an hour, not a workflow task kept open.
RECORD_LOCAL_RETRY_THRESHOLD = timedelta(seconds=10)

# The local activity that reads the worker's policy settings when a case opens.
POLICY_SETTINGS_TIMEOUT = timedelta(seconds=10)

# Up to this many bytes of effects per record: a burst of events while the database was away
# goes in a few calls, each well under Temporal's 2 MB payload limit (one email may quote a
# customer's comment of up to 64 KiB).
EFFECT_BATCH_BYTES = 256 * 1024

# The fan-out and its release ahead of everything else on the task queue (contract).
RELEASE_PRIORITY = Priority(priority_key=RELEASE_PRIORITY_KEY)

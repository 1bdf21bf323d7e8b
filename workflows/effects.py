"""How the workflows call their activities: timeouts, retry policies, batches and effect lanes.

Plain values, imported by workflow code inside the sandbox; the names are the contract's
(``ActivityName``). The workflow passes these as keyword arguments at each call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.common import Priority, RetryPolicy

from workflows.contract import RELEASE_PRIORITY_KEY, ActivityName

# A database write is quick; a longer wait means a stuck connection, better retried.
PERSIST_TIMEOUT = timedelta(seconds=30)
# Retried until the database is back: the case row must converge, and every write is idempotent.
PERSIST_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=0,  # unlimited
)

# Above the mailer's 30 s SMTP timeout plus the outbox writes around it.
NOTIFY_TIMEOUT = timedelta(minutes=2)
# Mail servers recover slowly (greylisting, maintenance): back off to a 10-minute pace and never
# give up, since the outbox makes every retry safe.
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=0,  # unlimited
)

# A worker killed mid-activity is noticed by the missed heartbeat within this, not at the
# start-to-close timeout (the activities beat with ``activities.heartbeat.heartbeating``).
HEARTBEAT_TIMEOUT = timedelta(seconds=10)

# The local activity that reads the worker's policy settings when a case opens.
POLICY_SETTINGS_TIMEOUT = timedelta(seconds=10)

CLAIM_TIMEOUT = PERSIST_TIMEOUT
CLAIM_RETRY = PERSIST_RETRY  # the number must be claimed before anything else: wait for the store

REGISTER_TIMEOUT = timedelta(seconds=30)
REGISTER_RETRY = PERSIST_RETRY  # a call to the Temporal server: short blips, retried for good


@dataclass(frozen=True)
class EffectOptions:
    activity: ActivityName
    start_to_close: timedelta
    retry: RetryPolicy
    heartbeat: timedelta | None = None  # the activity heartbeats (``heartbeating``)
    batch: int = 1  # effects per activity call; above one the activity takes a list


# Up to this many pending effects of a kind go in one activity call, so a burst of events costs
# a few activities; a retried batch redoes only what is not done (upserts, the outbox's marks).
EFFECTS_PER_BATCH = 50
# And up to this many bytes of input per call: Temporal refuses a payload over 2 MB (and warns
# over 512 KB), and one email may quote a customer's comment of up to 64 KiB.
EFFECT_BATCH_BYTES = 256 * 1024
# Each message in a notify batch is bounded by the mailer's timeout, and heartbeats show it alive.
NOTIFY_BATCH_TIMEOUT = timedelta(minutes=10)

# One lane per kind of effect, so a mail server that is down delays no database record and no
# release registration.
EFFECT_LANES = {
    "persist": EffectOptions(
        ActivityName.PERSIST_BATCH,
        PERSIST_TIMEOUT * 2,
        PERSIST_RETRY,
        HEARTBEAT_TIMEOUT,
        EFFECTS_PER_BATCH,
    ),
    "notify": EffectOptions(
        ActivityName.NOTIFY_BATCH,
        NOTIFY_BATCH_TIMEOUT,
        NOTIFY_RETRY,
        HEARTBEAT_TIMEOUT,
        EFFECTS_PER_BATCH,
    ),
    "register": EffectOptions(ActivityName.REGISTER_WITH_RELEASE, REGISTER_TIMEOUT, REGISTER_RETRY),
}

# Runs without the ``effect-lanes`` marker run their effects one at a time, in order, with these
# (``case.EFFECT_LANES_PATCH`` says when they can go).
EFFECTS_IN_ORDER = {
    "persist": EffectOptions(
        ActivityName.PERSIST, PERSIST_TIMEOUT, PERSIST_RETRY, HEARTBEAT_TIMEOUT
    ),
    "notify": EffectOptions(ActivityName.NOTIFY, NOTIFY_TIMEOUT, NOTIFY_RETRY, HEARTBEAT_TIMEOUT),
    "register": EffectOptions(ActivityName.REGISTER_WITH_RELEASE, REGISTER_TIMEOUT, REGISTER_RETRY),
}

# The fan-out and its release ahead of everything else on the task queue (contract).
RELEASE_PRIORITY = Priority(priority_key=RELEASE_PRIORITY_KEY)

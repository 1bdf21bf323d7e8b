"""How the workflow should call each activity: names, timeouts and retry policies.

Plain values with no heavy imports, so workflow code can import this module inside the sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.common import RetryPolicy

PERSIST = "persist"
NOTIFY = "notify"

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
# Mail servers recover slowly (greylisting, maintenance); back off to a gentle 10-minute pace
# and never give up, since the outbox makes every retry safe.
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=0,  # unlimited
)

# A worker killed mid-activity is noticed by the missed heartbeat, not by the start-to-close
# timeout: without it a crashed worker's email (and, the effects of a case running one at a
# time, everything the case does after it) waited the full two minutes before a retry.
# ``activities.heartbeat.heartbeating`` beats every HEARTBEAT_EVERY while an attempt runs.
HEARTBEAT_TIMEOUT = timedelta(seconds=10)
HEARTBEAT_EVERY = timedelta(seconds=2)

# A local activity when a case opens: the worker's policy settings, recorded in the case's history
# so that a replay reads the same even after the setting changed.
POLICY_SETTINGS = "policy_settings"
POLICY_SETTINGS_TIMEOUT = timedelta(seconds=10)

CLAIM = "claim_case"
CLAIM_TIMEOUT = PERSIST_TIMEOUT
CLAIM_RETRY = PERSIST_RETRY  # the number must be claimed before anything else: wait for the store

REGISTER = "register_with_release"
REGISTER_TIMEOUT = timedelta(seconds=30)
REGISTER_RETRY = PERSIST_RETRY  # a call to the Temporal server: short blips, retried for good


@dataclass(frozen=True)
class EffectOptions:
    activity: str
    start_to_close: timedelta
    retry: RetryPolicy
    heartbeat: timedelta | None = None  # the activity heartbeats (``heartbeating``)
    batch: int = 1  # effects per activity call; above one the activity takes a list


PERSIST_BATCH = "persist_batch"
NOTIFY_BATCH = "notify_batch"
# Up to this many pending effects of a kind go in one activity call: a burst of events (a desk
# catching up, a release shipping) costs a few activities, not one round trip per effect. A
# retried batch redoes only what is not done (the store's upserts, the outbox's sent marks).
BATCH = 50
# And up to this many bytes of input per call: Temporal refuses a payload over 2 MB (and warns
# over 512 KB), and one email may quote a customer's comment of up to 64 KiB.
BATCH_BYTES = 256 * 1024
# Each message in a notify batch is bounded by the mailer's timeout, and heartbeats show it alive.
NOTIFY_BATCH_TIMEOUT = timedelta(minutes=10)

# The workflow runs each kind of effect with these: one lane per kind (``EFFECT_LANES``), so a
# mail server that is down delays no database record and no release registration.
EFFECT_LANES = {
    "persist": EffectOptions(
        PERSIST_BATCH, PERSIST_TIMEOUT * 2, PERSIST_RETRY, HEARTBEAT_TIMEOUT, BATCH
    ),
    "notify": EffectOptions(
        NOTIFY_BATCH, NOTIFY_BATCH_TIMEOUT, NOTIFY_RETRY, HEARTBEAT_TIMEOUT, BATCH
    ),
    "register": EffectOptions(REGISTER, REGISTER_TIMEOUT, REGISTER_RETRY),
}

# How runs of cases started before the lanes (no ``effect-lanes`` patch marker in their history)
# run their effects: one at a time, in order. Kept until no such run is open.
EFFECT_OPTIONS = {
    "persist": EffectOptions(PERSIST, PERSIST_TIMEOUT, PERSIST_RETRY, HEARTBEAT_TIMEOUT),
    "notify": EffectOptions(NOTIFY, NOTIFY_TIMEOUT, NOTIFY_RETRY, HEARTBEAT_TIMEOUT),
    "register": EffectOptions(REGISTER, REGISTER_TIMEOUT, REGISTER_RETRY),
}

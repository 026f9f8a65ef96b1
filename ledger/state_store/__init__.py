"""Every ledger state transition: runs and ingest, claims, step outcomes, shared entities.

The rules every function here keeps:

* **Short transactions, no network.** Each function is one short transaction and never calls
  Webex: callers claim, call, then record the outcome in another transaction.
* **Fencing.** Row and entity writes made on behalf of a claim are fenced by its token: once a
  lease has expired and another worker has claimed the row (or entity), the old worker's
  writes match nothing and raise `ClaimLostError`. The fence is checked before any invariant,
  so a worker that lost a row hears that first.
* **Events.** Every state change appends an event in the same transaction (`events`).
* **Typed boundary.** Callers pass and get the frozen records and enums of `ledger.records`;
  no ORM object, and none of the store's own JSON, leaves this package.

Which submodule does what:

* `runs` — finding runs, and `begin_run`: an ingested file written as one run, streamed.
* `claims` — claiming batches of rows and shared entities, releasing, renewing, `retry_rows`.
* `steps` — the hot path: `record_steps` (`record_rows_steps`: many rows at once),
  `finish_row`, many threads' writes in one transaction (`ledger.group_commit`), with
  prebuilt Core statements (`step_statements`).
* `entities` — a shared entity's progress (`update_entity`) and its JSON; resetting failures.
* `events` — the one builder of event lines.
* `stats` — per-worker request counters.
* `rate` — the `work` processes' reports on the rate limit they share.

Reports over the ledger (exports, status) live in `ledger.reports`.
"""

from ledger.state_store.claims import (
    claim_batch,
    claim_entity,
    release_rows,
    renew_leases,
    retry_rows,
)
from ledger.state_store.entities import reset_failed_entities, update_entity
from ledger.state_store.rate import exchange_rate_shares, rate_exchange
from ledger.state_store.runs import (
    RunWriter,
    begin_run,
    find_run,
    find_run_by_hash,
    rejection_counts,
    run_is_finished,
)
from ledger.state_store.stats import save_worker_stats
from ledger.state_store.steps import finish_row, record_rows_steps, record_step, record_steps

__all__ = [
    "RunWriter",
    "begin_run",
    "claim_batch",
    "claim_entity",
    "exchange_rate_shares",
    "find_run",
    "find_run_by_hash",
    "finish_row",
    "rate_exchange",
    "record_rows_steps",
    "record_step",
    "record_steps",
    "rejection_counts",
    "release_rows",
    "renew_leases",
    "reset_failed_entities",
    "retry_rows",
    "run_is_finished",
    "save_worker_stats",
    "update_entity",
]

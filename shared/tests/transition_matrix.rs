//! The test that `BuildStatus::can_transition_to` promises: "a test walks every pair against the
//! real database". Every guarded statement on `builds` (the one-row transitions, their batch forms
//! and the farm's sweeps) runs against a build in every status, as the holder, as another worker
//! and with a stale attempt, on a real migrated Postgres with its triggers (`builds_guard`,
//! `builds_hold`). One table, `MATRIX`, says what each statement reports and which status the row
//! has afterwards. Besides that table the test checks, for every cell, that an edge the database
//! took is one `can_transition_to` allows, that a refused statement changed nothing, and that only
//! a first dispatch bumps the attempt.
//!
//! Rows get their status the way the farm gives it (dispatch, claim, heartbeat, complete, ...);
//! only a build's options (`retry_on_failure`, its last attempt) and the clock (a lease or a time
//! limit that ran out) are set by a direct `UPDATE`, which the triggers allow. Each cell runs on
//! its own build, one cell after another, and cancels that build when it is done, so the sweep
//! statements (which act on the whole table) never see another cell's build.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use freeagent_shared::db::builds::{
    self, Backoff, Beat, Build, ClaimAsk, CompleteAsk, Current, NewObject,
};
use freeagent_shared::db::{self, Pool, Transition};
use freeagent_shared::ids::{Attempt, BuildId, WorkerId};
use freeagent_shared::status::BuildStatus::{self, *};
use freeagent_shared::status::Platform;
use freeagent_shared::testing::TestDb;
use freeagent_shared::testing::factory::{self, BuildOpts};

use Expect::*;
use Setup as S;

/// The row a cell starts from. Every build first goes dispatch (attempt 1), claim by the holder,
/// abandon by the holder, dispatch (attempt 2): so each row is on attempt 2, and "a stale attempt"
/// is the holder's own earlier attempt 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// `pending`: attempt 2 dispatched (published), not claimed yet.
    Dispatched,
    /// `pending`: the holder claimed attempt 2, started it and abandoned it; not dispatched
    /// again yet (no attempt bump happened since).
    Requeued,
    /// `assigned`: the holder claimed attempt 2.
    Assigned,
    /// `building`: the holder's first heartbeat on attempt 2.
    Building,
    /// `completed` by the holder, from `building`.
    Completed,
    /// `failed` by the holder, from `building`.
    Failed,
    /// `cancelled` while `building`.
    Cancelled,
    /// No build has this id.
    Unknown,
}

impl Setup {
    const ALL: [Setup; 8] = [
        S::Dispatched,
        S::Requeued,
        S::Assigned,
        S::Building,
        S::Completed,
        S::Failed,
        S::Cancelled,
        S::Unknown,
    ];

    fn status(self) -> Option<BuildStatus> {
        match self {
            S::Dispatched | S::Requeued => Some(Pending),
            S::Assigned => Some(Assigned),
            S::Building => Some(Building),
            S::Completed => Some(Completed),
            S::Failed => Some(Failed),
            S::Cancelled => Some(Cancelled),
            S::Unknown => None,
        }
    }
}

/// A guarded statement, and what the build's options or the clock are when it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// `build_claim`.
    Claim,
    /// `build_claim_batch` with one ask.
    ClaimBatch,
    /// `build_heartbeat_batch` with one beat (there is no one-row heartbeat).
    Heartbeat,
    /// `build_complete`.
    Complete,
    /// `build_complete_batch` with one ask.
    CompleteBatch,
    /// `build_fail` on a build without retries.
    Fail,
    /// `build_fail` on a build with `retry_on_failure` and attempts left.
    FailRetry,
    /// `build_abandon` with attempts left.
    Abandon,
    /// `build_abandon` on the build's last attempt (`max_attempts = attempt`).
    AbandonLast,
    /// `build_cancel`.
    Cancel,
    /// `build_rescue_expired` once the lease ran out, attempts left.
    Rescue,
    /// `build_rescue_expired` once the lease ran out, on the last attempt.
    RescueLast,
    /// `build_time_out` once the time limit ran out (`started_at` moved back past it).
    TimeOut,
    /// `build_dispatch_batch`: a first dispatch.
    Dispatch,
    /// `build_republish` with no wait and every message taken for lost.
    Redispatch,
}

impl Op {
    const ALL: [Op; 15] = [
        Op::Claim,
        Op::ClaimBatch,
        Op::Heartbeat,
        Op::Complete,
        Op::CompleteBatch,
        Op::Fail,
        Op::FailRetry,
        Op::Abandon,
        Op::AbandonLast,
        Op::Cancel,
        Op::Rescue,
        Op::RescueLast,
        Op::TimeOut,
        Op::Dispatch,
        Op::Redispatch,
    ];

    /// Whether the statement names a worker and an attempt (else the farm runs it).
    fn names_caller(self) -> bool {
        !matches!(
            self,
            Op::Cancel | Op::Rescue | Op::RescueLast | Op::TimeOut | Op::Dispatch | Op::Redispatch
        )
    }

    /// Whether the statement names one build, so it can be asked about an unknown id.
    fn names_build(self) -> bool {
        matches!(
            self,
            Op::Claim
                | Op::ClaimBatch
                | Op::Heartbeat
                | Op::Complete
                | Op::CompleteBatch
                | Op::Fail
                | Op::Abandon
                | Op::Cancel
        )
    }

    /// The build's options, or the clock, as this cell needs them (applied after the setup).
    fn prepare(self) -> &'static [&'static str] {
        const LAST_ATTEMPT: &str = "UPDATE builds SET max_attempts = attempt WHERE id = $1";
        const LEASE_RAN_OUT: &str = "UPDATE builds SET lease_expires_at = lease_expires_at - interval '2 hours' WHERE id = $1";
        match self {
            Op::FailRetry => &["UPDATE builds SET retry_on_failure = true WHERE id = $1"],
            Op::AbandonLast => &[LAST_ATTEMPT],
            Op::Rescue => &[LEASE_RAN_OUT],
            Op::RescueLast => &[LAST_ATTEMPT, LEASE_RAN_OUT],
            Op::TimeOut => &[
                "UPDATE builds SET started_at = started_at - make_interval(secs => timeout_secs + 60) WHERE id = $1",
            ],
            _ => &[],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    /// The worker that holds (or, for a pending build, is sent) the build, with attempt 2.
    Holder,
    /// Another worker of the same queue, with attempt 2.
    OtherWorker,
    /// The holder with its earlier attempt 1.
    StaleAttempt,
}

const CALLERS: [Caller; 3] = [Caller::Holder, Caller::OtherWorker, Caller::StaleAttempt];

/// What a statement reports, and the status the row has afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// `Transition::Applied`; the row's status now.
    Applied(BuildStatus),
    /// `Transition::Stale`; the row is unchanged.
    Stale,
    /// `Transition::NotFound`.
    NotFound,
    /// A batch or sweep statement returned (moved) the row; its status now.
    Moved(BuildStatus),
    /// A batch or sweep statement left the row out; the row is unchanged.
    Kept,
}

/// The matrix: setup × statement → what each caller gets, as
/// `[holder, another worker, stale attempt]` for statements that name a worker and an attempt,
/// `[farm]` for those that do not, and `[holder]` for an unknown build id.
#[rustfmt::skip]
const MATRIX: &[(Setup, Op, &[Expect])] = &[
    // setup        statement          holder              another worker      stale attempt

    // pending, attempt 2 dispatched: any worker of the queue may claim it, once.
    (S::Dispatched, Op::Claim,         &[Applied(Assigned), Applied(Assigned), Stale]),
    (S::Dispatched, Op::ClaimBatch,    &[Moved(Assigned),   Moved(Assigned),   Kept]),
    (S::Dispatched, Op::Heartbeat,     &[Kept,              Kept,              Kept]),
    (S::Dispatched, Op::Complete,      &[Stale,             Stale,             Stale]),
    (S::Dispatched, Op::CompleteBatch, &[Kept,              Kept,              Kept]),
    (S::Dispatched, Op::Fail,          &[Stale,             Stale,             Stale]),
    (S::Dispatched, Op::FailRetry,     &[Stale,             Stale,             Stale]),
    (S::Dispatched, Op::Abandon,       &[Stale,             Stale,             Stale]),
    (S::Dispatched, Op::AbandonLast,   &[Stale,             Stale,             Stale]),
    (S::Dispatched, Op::Cancel,        &[Applied(Cancelled)]),
    (S::Dispatched, Op::Rescue,        &[Kept]),
    (S::Dispatched, Op::RescueLast,    &[Kept]),
    (S::Dispatched, Op::TimeOut,       &[Kept]),
    (S::Dispatched, Op::Dispatch,      &[Kept]),
    // A re-publish keeps the attempt (checked for every cell: only a first dispatch bumps it).
    (S::Dispatched, Op::Redispatch,    &[Moved(Pending)]),

    // pending, attempt 2 handed back and not dispatched again.
    // Attempt 2 ran and was handed back: nothing waits in JetStream under it, so a leftover
    // message of it (a re-publish's duplicate) claims nothing, by its old holder or any worker,
    // until the next dispatch bumps the attempt (the claim guard needs `dispatched_at`). Before
    // that guard, attempt 2 was claimed again here, past the backoff, and its ended attempt
    // record was reused.
    (S::Requeued,   Op::Claim,         &[Stale,             Stale,             Stale]),
    (S::Requeued,   Op::ClaimBatch,    &[Kept,              Kept,              Kept]),
    (S::Requeued,   Op::Heartbeat,     &[Kept,              Kept,              Kept]),
    (S::Requeued,   Op::Complete,      &[Stale,             Stale,             Stale]),
    (S::Requeued,   Op::CompleteBatch, &[Kept,              Kept,              Kept]),
    (S::Requeued,   Op::Fail,          &[Stale,             Stale,             Stale]),
    (S::Requeued,   Op::FailRetry,     &[Stale,             Stale,             Stale]),
    (S::Requeued,   Op::Abandon,       &[Stale,             Stale,             Stale]),
    (S::Requeued,   Op::AbandonLast,   &[Stale,             Stale,             Stale]),
    (S::Requeued,   Op::Cancel,        &[Applied(Cancelled)]),
    (S::Requeued,   Op::Rescue,        &[Kept]),
    (S::Requeued,   Op::RescueLast,    &[Kept]),
    (S::Requeued,   Op::TimeOut,       &[Kept]),
    // A first dispatch (attempt 2 → 3); a re-publish takes only what was dispatched.
    (S::Requeued,   Op::Dispatch,      &[Moved(Pending)]),
    (S::Requeued,   Op::Redispatch,    &[Kept]),

    // assigned to the holder.
    (S::Assigned,   Op::Claim,         &[Stale,             Stale,             Stale]),
    (S::Assigned,   Op::ClaimBatch,    &[Kept,              Kept,              Kept]),
    (S::Assigned,   Op::Heartbeat,     &[Moved(Building),   Kept,              Kept]),
    (S::Assigned,   Op::Complete,      &[Applied(Completed), Stale,            Stale]),
    (S::Assigned,   Op::CompleteBatch, &[Moved(Completed),  Kept,              Kept]),
    (S::Assigned,   Op::Fail,          &[Applied(Failed),   Stale,             Stale]),
    (S::Assigned,   Op::FailRetry,     &[Applied(Pending),  Stale,             Stale]),
    (S::Assigned,   Op::Abandon,       &[Applied(Pending),  Stale,             Stale]),
    (S::Assigned,   Op::AbandonLast,   &[Applied(Failed),   Stale,             Stale]),
    (S::Assigned,   Op::Cancel,        &[Applied(Cancelled)]),
    (S::Assigned,   Op::Rescue,        &[Moved(Pending)]),
    (S::Assigned,   Op::RescueLast,    &[Moved(Failed)]),
    // NOTE (reported): the guard names 'assigned', but a claim sets `started_at = NULL` and
    // `NULL + timeout < now()` is never true, so an assigned build never times out (its lease
    // still ends it). docs/state_machine.md says "running", i.e. building.
    (S::Assigned,   Op::TimeOut,       &[Kept]),
    (S::Assigned,   Op::Dispatch,      &[Kept]),
    (S::Assigned,   Op::Redispatch,    &[Kept]),

    // building on the holder.
    (S::Building,   Op::Claim,         &[Stale,             Stale,             Stale]),
    (S::Building,   Op::ClaimBatch,    &[Kept,              Kept,              Kept]),
    (S::Building,   Op::Heartbeat,     &[Moved(Building),   Kept,              Kept]),
    (S::Building,   Op::Complete,      &[Applied(Completed), Stale,            Stale]),
    (S::Building,   Op::CompleteBatch, &[Moved(Completed),  Kept,              Kept]),
    (S::Building,   Op::Fail,          &[Applied(Failed),   Stale,             Stale]),
    (S::Building,   Op::FailRetry,     &[Applied(Pending),  Stale,             Stale]),
    (S::Building,   Op::Abandon,       &[Applied(Pending),  Stale,             Stale]),
    (S::Building,   Op::AbandonLast,   &[Applied(Failed),   Stale,             Stale]),
    (S::Building,   Op::Cancel,        &[Applied(Cancelled)]),
    (S::Building,   Op::Rescue,        &[Moved(Pending)]),
    (S::Building,   Op::RescueLast,    &[Moved(Failed)]),
    (S::Building,   Op::TimeOut,       &[Moved(Failed)]),
    (S::Building,   Op::Dispatch,      &[Kept]),
    (S::Building,   Op::Redispatch,    &[Kept]),

    // completed: final.
    (S::Completed,  Op::Claim,         &[Stale,             Stale,             Stale]),
    (S::Completed,  Op::ClaimBatch,    &[Kept,              Kept,              Kept]),
    (S::Completed,  Op::Heartbeat,     &[Kept,              Kept,              Kept]),
    (S::Completed,  Op::Complete,      &[Stale,             Stale,             Stale]),
    (S::Completed,  Op::CompleteBatch, &[Kept,              Kept,              Kept]),
    (S::Completed,  Op::Fail,          &[Stale,             Stale,             Stale]),
    (S::Completed,  Op::FailRetry,     &[Stale,             Stale,             Stale]),
    (S::Completed,  Op::Abandon,       &[Stale,             Stale,             Stale]),
    (S::Completed,  Op::AbandonLast,   &[Stale,             Stale,             Stale]),
    (S::Completed,  Op::Cancel,        &[Stale]),
    (S::Completed,  Op::Rescue,        &[Kept]),
    (S::Completed,  Op::RescueLast,    &[Kept]),
    (S::Completed,  Op::TimeOut,       &[Kept]),
    (S::Completed,  Op::Dispatch,      &[Kept]),
    (S::Completed,  Op::Redispatch,    &[Kept]),

    // failed: final.
    (S::Failed,     Op::Claim,         &[Stale,             Stale,             Stale]),
    (S::Failed,     Op::ClaimBatch,    &[Kept,              Kept,              Kept]),
    (S::Failed,     Op::Heartbeat,     &[Kept,              Kept,              Kept]),
    (S::Failed,     Op::Complete,      &[Stale,             Stale,             Stale]),
    (S::Failed,     Op::CompleteBatch, &[Kept,              Kept,              Kept]),
    (S::Failed,     Op::Fail,          &[Stale,             Stale,             Stale]),
    (S::Failed,     Op::FailRetry,     &[Stale,             Stale,             Stale]),
    (S::Failed,     Op::Abandon,       &[Stale,             Stale,             Stale]),
    (S::Failed,     Op::AbandonLast,   &[Stale,             Stale,             Stale]),
    (S::Failed,     Op::Cancel,        &[Stale]),
    (S::Failed,     Op::Rescue,        &[Kept]),
    (S::Failed,     Op::RescueLast,    &[Kept]),
    (S::Failed,     Op::TimeOut,       &[Kept]),
    (S::Failed,     Op::Dispatch,      &[Kept]),
    (S::Failed,     Op::Redispatch,    &[Kept]),

    // cancelled: final.
    (S::Cancelled,  Op::Claim,         &[Stale,             Stale,             Stale]),
    (S::Cancelled,  Op::ClaimBatch,    &[Kept,              Kept,              Kept]),
    (S::Cancelled,  Op::Heartbeat,     &[Kept,              Kept,              Kept]),
    (S::Cancelled,  Op::Complete,      &[Stale,             Stale,             Stale]),
    (S::Cancelled,  Op::CompleteBatch, &[Kept,              Kept,              Kept]),
    (S::Cancelled,  Op::Fail,          &[Stale,             Stale,             Stale]),
    (S::Cancelled,  Op::FailRetry,     &[Stale,             Stale,             Stale]),
    (S::Cancelled,  Op::Abandon,       &[Stale,             Stale,             Stale]),
    (S::Cancelled,  Op::AbandonLast,   &[Stale,             Stale,             Stale]),
    (S::Cancelled,  Op::Cancel,        &[Stale]),
    (S::Cancelled,  Op::Rescue,        &[Kept]),
    (S::Cancelled,  Op::RescueLast,    &[Kept]),
    (S::Cancelled,  Op::TimeOut,       &[Kept]),
    (S::Cancelled,  Op::Dispatch,      &[Kept]),
    (S::Cancelled,  Op::Redispatch,    &[Kept]),

    // no such build.
    (S::Unknown,    Op::Claim,         &[NotFound]),
    (S::Unknown,    Op::ClaimBatch,    &[Kept]),
    (S::Unknown,    Op::Heartbeat,     &[Kept]),
    (S::Unknown,    Op::Complete,      &[NotFound]),
    (S::Unknown,    Op::CompleteBatch, &[Kept]),
    (S::Unknown,    Op::Fail,          &[NotFound]),
    (S::Unknown,    Op::Abandon,       &[NotFound]),
    (S::Unknown,    Op::Cancel,        &[NotFound]),
];

const LEASE_SECS: f64 = 3600.0;
const QUEUE: &str = "android";
const NO_BACKOFF: Backoff = Backoff {
    base_secs: 0.0,
    cap_secs: 0.0,
};

fn attempt(n: i32) -> Attempt {
    Attempt::new(n).unwrap()
}

#[derive(Clone, Copy)]
struct Workers {
    holder: WorkerId,
    other: WorkerId,
}

/// The columns a guard reads or a transition writes.
#[derive(Clone, Debug, PartialEq)]
struct Snap {
    status: BuildStatus,
    attempt: Attempt,
    worker_id: Option<WorkerId>,
    dispatched_at: Option<chrono::DateTime<chrono::Utc>>,
    lease_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

async fn snap(pool: &Pool, id: BuildId) -> Option<Snap> {
    builds::build_get(pool, id).await.unwrap().map(|b| Snap {
        status: b.status,
        attempt: b.attempt,
        worker_id: b.worker_id,
        dispatched_at: b.dispatched_at,
        lease_expires_at: b.lease_expires_at,
        updated_at: b.updated_at,
    })
}

/// What a statement said, before it is compared with the table.
#[derive(Debug)]
enum Got {
    Applied(BuildStatus),
    Stale(Current),
    NotFound,
    /// The cell's build was in the result (with the status the statement returned, if any).
    Moved(Option<BuildStatus>),
    Kept,
}

fn one(t: Transition<Build>) -> Got {
    match t {
        Transition::Applied(b) => Got::Applied(b.status),
        Transition::Stale(c) => Got::Stale(c),
        Transition::NotFound => Got::NotFound,
    }
}

/// A batch's or sweep's result: whether it holds the cell's build, and which other builds it
/// moved (none may exist).
fn many(
    id: BuildId,
    rows: impl IntoIterator<Item = (BuildId, Option<BuildStatus>)>,
) -> (Got, Vec<BuildId>) {
    let mut got = Got::Kept;
    let mut others = vec![];
    for (row, status) in rows {
        if row == id {
            got = Got::Moved(status);
        } else {
            others.push(row);
        }
    }
    (got, others)
}

fn result_object(id: BuildId) -> NewObject {
    NewObject {
        key: format!("builds/{id}/result"),
        size: 42,
        sha256: "ab".repeat(32),
    }
}

async fn dispatch(pool: &Pool) -> Result<Vec<BuildId>, db::Error> {
    let mut tx = pool.begin().await?;
    let pass = builds::build_dispatch_batch(&mut tx, 100, 100).await?;
    tx.commit().await?;
    Ok(pass.dispatched.into_iter().map(|d| d.id).collect())
}

async fn republish(pool: &Pool) -> Result<Vec<BuildId>, db::Error> {
    let mut tx = pool.begin().await?;
    let queue = freeagent_shared::status::QueueName::parse(QUEUE).expect("queue name");
    let lost = builds::build_republish(
        &mut tx,
        &queue,
        0.0,
        chrono::DateTime::<chrono::Utc>::MAX_UTC,
        100,
    )
    .await?;
    tx.commit().await?;
    Ok(lost.into_iter().map(|d| d.id).collect())
}

/// Runs `op` on `id` as `worker` with `n`.
async fn run(
    pool: &Pool,
    op: Op,
    id: BuildId,
    worker: WorkerId,
    n: Attempt,
) -> Result<(Got, Vec<BuildId>), db::Error> {
    let queues = vec![QUEUE.to_owned()];
    Ok(match op {
        Op::Claim => (
            one(builds::build_claim(pool, id, n, worker, &queues, LEASE_SECS).await?),
            vec![],
        ),
        Op::ClaimBatch => {
            let ask = ClaimAsk {
                id,
                attempt: n,
                worker,
                queues,
                lease_secs: LEASE_SECS,
            };
            let rows = builds::build_claim_batch(pool, &[ask]).await?;
            many(id, rows.into_iter().map(|b| (b.id, Some(b.status))))
        }
        Op::Heartbeat => {
            let beat = Beat {
                id,
                attempt: n,
                worker,
                progress: Some(10),
                lease_secs: LEASE_SECS,
            };
            let rows = builds::build_heartbeat_batch(pool, &[beat]).await?;
            many(id, rows.into_iter().map(|r| (r.id, None)))
        }
        Op::Complete => (
            one(builds::build_complete(pool, id, n, worker, &result_object(id)).await?),
            vec![],
        ),
        Op::CompleteBatch => {
            let ask = CompleteAsk {
                id,
                attempt: n,
                worker,
                result: result_object(id),
            };
            let rows = builds::build_complete_batch(pool, &[ask]).await?;
            many(id, rows.into_iter().map(|b| (b.id, Some(b.status))))
        }
        Op::Fail | Op::FailRetry => (
            one(builds::build_fail(pool, id, n, worker, "exit status 1", NO_BACKOFF).await?),
            vec![],
        ),
        Op::Abandon | Op::AbandonLast => (
            one(builds::build_abandon(pool, id, n, worker, "shutting down", NO_BACKOFF).await?),
            vec![],
        ),
        Op::Cancel => (one(builds::build_cancel(pool, id).await?), vec![]),
        Op::Rescue | Op::RescueLast => {
            let rows = builds::build_rescue_expired(pool, 100, NO_BACKOFF).await?;
            many(id, rows.into_iter().map(|m| (m.id, Some(m.status))))
        }
        Op::TimeOut => {
            let rows = builds::build_time_out(pool, 100).await?;
            many(id, rows.into_iter().map(|m| (m.id, Some(m.status))))
        }
        Op::Dispatch => many(id, dispatch(pool).await?.into_iter().map(|d| (d, None))),
        Op::Redispatch => many(id, republish(pool).await?.into_iter().map(|d| (d, None))),
    })
}

/// One step of a setup: the farm's own statement, which must apply.
async fn step(
    pool: &Pool,
    what: &str,
    op: Op,
    id: BuildId,
    w: WorkerId,
    n: i32,
) -> Result<(), String> {
    match run(pool, op, id, w, attempt(n)).await {
        Ok((Got::Applied(_) | Got::Moved(_), _)) => Ok(()),
        Ok((got, _)) => Err(format!("{what} did not apply: {got:?}")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// A new build in `setup`'s status, on attempt 2, reached the way the farm reaches it.
async fn setup_row(pool: &Pool, w: Workers, setup: Setup) -> Result<BuildId, String> {
    let Some(want) = setup.status() else {
        return Ok(BuildId::new());
    };
    let opts = BuildOpts {
        platform: Platform::Android,
        max_attempts: 5,
        ..BuildOpts::default()
    };
    let id = factory::build(pool, opts).await;
    let h = w.holder;
    step(pool, "dispatch 1", Op::Dispatch, id, h, 1).await?;
    step(pool, "claim 1", Op::Claim, id, h, 1).await?;
    step(pool, "abandon 1", Op::Abandon, id, h, 1).await?;
    step(pool, "dispatch 2", Op::Dispatch, id, h, 2).await?;
    if setup != S::Dispatched {
        step(pool, "claim 2", Op::Claim, id, h, 2).await?;
    }
    if !matches!(setup, S::Dispatched | S::Assigned) {
        step(pool, "heartbeat 2", Op::Heartbeat, id, h, 2).await?;
    }
    match setup {
        S::Requeued => step(pool, "abandon 2", Op::Abandon, id, h, 2).await?,
        S::Completed => step(pool, "complete 2", Op::Complete, id, h, 2).await?,
        S::Failed => step(pool, "fail 2", Op::Fail, id, h, 2).await?,
        S::Cancelled => step(pool, "cancel", Op::Cancel, id, h, 2).await?,
        _ => {}
    }
    match snap(pool, id).await {
        Some(s) if s.status == want && s.attempt == attempt(2) => Ok(id),
        other => Err(format!("setup reached {other:?}, not {want} on attempt 2")),
    }
}

/// One cell: its mismatches (empty when the database did what the table says).
async fn cell(
    pool: &Pool,
    w: Workers,
    setup: Setup,
    op: Op,
    caller: Caller,
    want: Expect,
) -> Vec<String> {
    let mut bad = vec![];
    let id = match setup_row(pool, w, setup).await {
        Ok(id) => id,
        Err(e) => return vec![format!("setup failed: {e}")],
    };
    if setup != S::Unknown {
        for sql in op.prepare() {
            if let Err(e) = sqlx::query(sql).bind(id).execute(pool).await {
                return vec![format!("preparing the row failed: {e}")];
            }
        }
    }
    let before = snap(pool, id).await;
    let (worker, n) = match caller {
        Caller::Holder => (w.holder, attempt(2)),
        Caller::OtherWorker => (w.other, attempt(2)),
        Caller::StaleAttempt => (w.holder, attempt(1)),
    };
    let (got, others) = match run(pool, op, id, worker, n).await {
        Ok(r) => r,
        Err(e) => return vec![format!("the statement failed: {e}")],
    };
    let after = snap(pool, id).await;
    let now = after.as_ref().map(|s| s.status);

    // The outcome against the table.
    let actual = match &got {
        Got::Applied(s) => Applied(now.unwrap_or(*s)),
        Got::Stale(_) => Stale,
        Got::NotFound => NotFound,
        Got::Moved(s) => Moved(now.or(*s).unwrap_or(Pending)),
        Got::Kept => Kept,
    };
    if actual != want {
        bad.push(format!(
            "expected {want:?}, got {actual:?} (row now {now:?})"
        ));
    }
    // What the statement returned agrees with the row.
    match (&got, now) {
        (Got::Applied(s) | Got::Moved(Some(s)), Some(n)) if *s != n => {
            bad.push(format!(
                "the statement returned status {s} but the row is {n}"
            ));
        }
        (Got::Stale(c), _) => {
            let was = before.as_ref().map(|b| (b.status, b.attempt, b.worker_id));
            if Some((c.status, c.attempt, c.worker_id)) != was {
                bad.push(format!("Stale reported {c:?}, the row was {was:?}"));
            }
        }
        _ => {}
    }
    if !others.is_empty() {
        bad.push(format!("the statement also moved other builds: {others:?}"));
    }
    match (&before, &after) {
        (Some(b), Some(a)) => {
            let changed = matches!(got, Got::Applied(_) | Got::Moved(_));
            // Every edge taken is one the state machine allows.
            if changed && a.status != b.status && !b.status.can_transition_to(a.status) {
                bad.push(format!(
                    "took {} -> {}, which can_transition_to does not allow",
                    b.status, a.status
                ));
            }
            // A refused statement changes nothing.
            if !changed && a != b {
                bad.push(format!("refused, yet the row changed: {b:?} -> {a:?}"));
            }
            // The attempt grows only on a first dispatch, by one.
            let first_dispatch =
                changed && matches!(op, Op::Dispatch | Op::Redispatch) && b.dispatched_at.is_none();
            let bump = i32::from(first_dispatch);
            if a.attempt.get() != b.attempt.get() + bump {
                bad.push(format!(
                    "attempt went {} -> {} (expected +{bump})",
                    b.attempt, a.attempt
                ));
            }
        }
        (None, None) => {}
        (b, a) => bad.push(format!("the row went from {b:?} to {a:?}")),
    }

    // Leave no build the next cell's sweeps could see.
    if now.is_some_and(|s| !s.is_terminal()) {
        match builds::build_cancel(pool, id).await {
            Ok(Transition::Applied(_)) => {}
            other => bad.push(format!("cleanup: cancel gave {other:?}")),
        }
    }
    bad
}

/// The table's own shape: every setup × statement once, one expectation per caller, and every
/// edge it expects allowed by `can_transition_to`.
fn table_problems() -> Vec<String> {
    let mut bad = vec![];
    for setup in Setup::ALL {
        for op in Op::ALL {
            let rows: Vec<_> = MATRIX
                .iter()
                .filter(|(s, o, _)| *s == setup && *o == op)
                .collect();
            let wanted = setup != S::Unknown || op.names_build();
            match (rows.as_slice(), wanted) {
                ([], false) => {}
                ([(_, _, cells)], true) => {
                    let n = if op.names_caller() && setup != S::Unknown {
                        3
                    } else {
                        1
                    };
                    if cells.len() != n {
                        bad.push(format!(
                            "table: {setup:?} × {op:?} has {} callers, not {n}",
                            cells.len()
                        ));
                    }
                    for e in *cells {
                        if let (Some(from), Applied(to) | Moved(to)) = (setup.status(), e)
                            && from != *to
                            && !from.can_transition_to(*to)
                        {
                            bad.push(format!("table: {setup:?} × {op:?} expects {from} -> {to}, not an allowed edge"));
                        }
                    }
                }
                (r, _) => bad.push(format!(
                    "table: {setup:?} × {op:?} appears {} times",
                    r.len()
                )),
            }
        }
    }
    bad
}

#[tokio::test]
async fn every_status_times_every_guarded_statement() {
    freeagent_shared::testing::init_test_log();
    let db = TestDb::new().await;
    let pool = &db.pool;
    let w = Workers {
        holder: factory::worker(pool, &[Platform::Android]).await.worker_id,
        other: factory::worker(pool, &[Platform::Android]).await.worker_id,
    };
    let mut bad = table_problems();
    let mut cells = 0;
    for &(setup, op, wants) in MATRIX {
        let callers: &[Caller] = if op.names_caller() && setup != S::Unknown {
            &CALLERS
        } else {
            &[Caller::Holder]
        };
        for (&caller, &want) in callers.iter().zip(wants) {
            cells += 1;
            for problem in cell(pool, w, setup, op, caller, want).await {
                bad.push(format!("{setup:?} × {op:?} × {caller:?}: {problem}"));
            }
        }
    }
    // Every build ended terminal, so `builds_hold` must have given every slot back.
    let held: Vec<i32> = sqlx::query_scalar("SELECT held FROM workers")
        .fetch_all(pool)
        .await
        .unwrap();
    if held != [0, 0] {
        bad.push(format!(
            "workers.held is {held:?} after every cell, not [0, 0]"
        ));
    }
    assert!(
        bad.is_empty(),
        "{} problem(s) in {cells} cells:\n  {}",
        bad.len(),
        bad.join("\n  ")
    );
}

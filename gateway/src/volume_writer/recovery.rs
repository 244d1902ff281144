//! Steps 1-3 of recovery (see `borealis_quorum::recovery`): a read quorum of safekeeper
//! states, the plan (epoch, VDL, history), the epoch installed on every member reachable, then a
//! wait until a write quorum holds the recovered log up to the VDL (gossip fills the gaps).

use super::{LogError, VolumeWriterConfig, CALL_TIMEOUT, CONNECT_TIMEOUT};
use borealis_core::quorum::{PG_MEMBERS, READ_QUORUM, WRITE_QUORUM};
use borealis_core::{ErrorKind, Lsn, SegmentId, TenantId};
use borealis_quorum::recovery::{self, MemberReport};
use borealis_wire::{Body, Client, WireError};
use std::time::Duration;
use tracing::{debug, warn};

/// How long recovery waits for a write quorum to hold the recovered log.
const RECOVERY_DURABLE_WAIT: Duration = Duration::from_secs(10);

/// Steps 1-3 of recovery (see `borealis_quorum::recovery`): read quorum of states, plan, install
/// the epoch on every member reachable, wait for a write quorum to hold the log to the VDL.
pub(super) async fn recover_epoch(
    tenant: TenantId,
    config: &VolumeWriterConfig,
) -> Result<(u64, recovery::RecoveryPlan), LogError> {
    let token = config.tokens.tenant(tenant);
    let clients = futures::future::join_all(
        config
            .safekeepers
            .iter()
            .map(|a| Client::connect(a, &token, CONNECT_TIMEOUT, None)),
    )
    .await;
    let clients: Vec<Option<Client>> = clients.into_iter().map(|c| c.ok()).collect();
    let states = futures::future::join_all(clients.iter().enumerate().map(|(m, c)| async move {
        let c = c.as_ref()?;
        match c.call(Body::GetState { tenant }, CALL_TIMEOUT).await {
            Ok(Body::State {
                epoch,
                segments,
                history,
                ..
            }) => Some(MemberReport {
                member: m,
                epoch,
                history,
                segments: segments
                    .iter()
                    .map(|s| (s.segment, s.scl, s.last_cpl))
                    .collect(),
            }),
            Ok(other) => {
                warn!(
                    member = m,
                    answer = other.name(),
                    "unexpected answer to GetState"
                );
                None
            }
            Err(e) => {
                debug!(member = m, error = %e, "GetState failed");
                None
            }
        }
    }))
    .await;
    let reports: Vec<MemberReport> = states.into_iter().flatten().collect();
    if reports.len() < READ_QUORUM {
        return Err(LogError::Recovery(format!(
            "only {} of {PG_MEMBERS} safekeepers answered, {READ_QUORUM} needed",
            reports.len()
        )));
    }
    let plan = recovery::plan(&reports).map_err(|e| LogError::Recovery(e.to_string()))?;
    let epoch = plan.epoch;
    // Installing an epoch on fewer members than a write quorum cannot produce a writer, and
    // each attempt would durably burn an epoch on the members it reached (found by drill 3b:
    // epochs 1 → 150 during one outage). Stop before any Hello.
    if reports.len() < WRITE_QUORUM {
        return Err(LogError::Recovery(format!(
            "write quorum lost: only {} of {PG_MEMBERS} safekeepers answered, {WRITE_QUORUM} needed to start a writer",
            reports.len()
        )));
    }

    // Install the epoch: each member aligns its log to our history (truncating at least above
    // the VDL) before answering.
    let plan_ref = &plan;
    let hellos = futures::future::join_all(clients.iter().enumerate().map(|(m, c)| async move {
        let c = c.as_ref()?;
        let hello = Body::Hello {
            tenant,
            epoch,
            epoch_start_lsn: plan_ref.vdl,
            history: plan_ref.history.clone(),
        };
        match c.call(hello, CALL_TIMEOUT).await {
            Ok(Body::HelloOk { .. }) => Some(m),
            Ok(_) => None,
            Err(WireError::Remote {
                kind: ErrorKind::Fenced,
                message,
            }) => {
                warn!(member = m, %message, "a newer writer exists");
                None
            }
            Err(_) => None,
        }
    }))
    .await;
    let installed = hellos.iter().flatten().count();
    if installed < WRITE_QUORUM {
        return Err(LogError::Recovery(format!(
            "epoch {epoch} installed on {installed} of {PG_MEMBERS} safekeepers, {WRITE_QUORUM} needed (write quorum lost)"
        )));
    }

    // Wait until a write quorum holds everything up to the VDL (gossip fills the gaps).
    let deadline = tokio::time::Instant::now() + RECOVERY_DURABLE_WAIT;
    loop {
        let states =
            futures::future::join_all(clients.iter().enumerate().map(|(m, c)| async move {
                let c = c.as_ref()?;
                match c.call(Body::GetState { tenant }, CALL_TIMEOUT).await {
                    Ok(Body::State {
                        epoch: e, segments, ..
                    }) if e == epoch => Some(
                        segments
                            .into_iter()
                            .map(move |s| (m, s.segment, s.scl))
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                }
            }))
            .await;
        let scls: Vec<(usize, SegmentId, Lsn)> = states.into_iter().flatten().flatten().collect();
        if recovery::is_durable(&plan, &scls) {
            return Ok((epoch, plan));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(LogError::Recovery(format!(
                "the recovered log (VDL {}) did not reach a write quorum within {} s",
                plan.vdl,
                RECOVERY_DURABLE_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

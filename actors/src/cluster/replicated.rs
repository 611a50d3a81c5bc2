//! The cluster as its replicated log sees it: who leads, at which term, how far the log
//! is applied here, each member's role, state, lag and incarnation; and the events that
//! say when leadership moves.

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::raft::Role;
use troupe_runtime::store::{Batch, Store, StoreError, META};

use super::{Cluster, MemberStatus};

/// One member of the replicated log.
#[derive(Debug, Clone)]
pub struct LogMember {
    pub name: String,
    /// Its cluster address, as it last said, else as it recorded when it last started.
    pub address: String,
    pub role: Role,
    /// As the leader last decided it; UP for a member never decided upon. SUSPECT, not UP,
    /// for a member this node does not hear from when the member was never decided upon, or
    /// when no leader can decide now (none is known here, or this node leads and no majority
    /// answers it): UP would say someone heard from it. Never DOWN for either: DOWN says
    /// that its work moved, which no decision made happen.
    pub state: super::lease::MemberState,
    /// When this node last heard from it (now for this node itself).
    pub last_heartbeat: Option<chrono::DateTime<chrono::Utc>>,
    /// Entries the leader has that it has not confirmed yet; known on the leader only.
    pub lag: Option<u64>,
    /// Entries this node had applied when it last beat the member that the member had not
    /// applied when it answered (0 for this node itself); `None` when it did not answer
    /// that beat.
    pub applied_lag: Option<u64>,
    /// Its work runs, as its answer to this node's last beat said (this node's own now);
    /// `None` when it did not answer that beat.
    pub working: Option<bool>,
    /// How many times it has started (grows at each start).
    pub incarnation: u64,
    /// What room its agents have for each capability they serve: as its last heartbeat
    /// said (seen at `last_heartbeat`), or this node's own now.
    pub rooms: std::collections::BTreeMap<String, crate::task::Room>,
}

#[derive(Debug, Clone)]
pub struct ClusterState {
    pub leader: Option<String>,
    pub term: u64,
    /// The last entry this node applied (every applied entry is committed on a majority).
    pub commit_index: u64,
    pub members: Vec<LogMember>,
}

/// The key of a node's incarnation in the replicated `meta` table.
fn incarnation_key(node: &str) -> String {
    format!("incarnation@{node}")
}

/// The key of a node's labels in the replicated `meta` table.
fn labels_key(node: &str) -> String {
    format!("labels@{node}")
}

/// A member's labels, as it recorded them at its last start.
pub(crate) fn labels_in(
    v: &troupe_runtime::store::View<'_>,
    node: &str,
) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
    Ok(match v.get(META, &labels_key(node))? {
        Some(bytes) => troupe_runtime::codec::decode(&bytes)?,
        None => Default::default(),
    })
}

/// The key of a node's cluster address in the replicated `meta` table.
fn address_key(node: &str) -> String {
    format!("address@{node}")
}

/// Counts this start of the node `node` and records where it listens, so every member can
/// dial it: its incarnation, one more than last time. The record is written in the
/// background: a member restarting while its cluster has no majority must still come up
/// (to serve reads and say why it takes no writes); it is written once a leader takes it.
pub(crate) async fn count_start(
    store: &Store,
    node: &str,
    address: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<u64, StoreError> {
    let last = match store.get(META, &incarnation_key(node)).await? {
        Some(bytes) => troupe_runtime::codec::decode::<u64>(&bytes)?,
        None => 0,
    };
    let next = last + 1;
    let batch = Batch::new()
        .put(META, incarnation_key(node), troupe_runtime::codec::encode(&next)?)
        .put(META, address_key(node), address.as_bytes().to_vec())
        .put(META, labels_key(node), troupe_runtime::codec::encode(labels)?);
    let (store, node) = (store.clone(), node.to_owned());
    tokio::spawn(async move {
        let mut wait = std::time::Duration::from_millis(500);
        while let Err(e) = store.write(batch.clone()).await {
            if store.failure().is_some() {
                return;
            }
            tracing::warn!(%node, error = %e, retry_in = ?wait, "cannot record this node's start yet");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(30));
        }
    });
    Ok(next)
}

/// The cluster addresses the other members of the log last recorded.
pub(crate) async fn member_addresses(store: &Store, me: &str) -> Result<Vec<String>, StoreError> {
    let names: Vec<String> = store
        .status()
        .members
        .into_iter()
        .map(|m| m.name)
        .filter(|n| n != me)
        .collect();
    store
        .view(move |v| {
            let mut out = Vec::new();
            for name in &names {
                if let Some(bytes) = v.get(META, &address_key(name))? {
                    out.push(String::from_utf8_lossy(&bytes).into_owned());
                }
            }
            Ok(out)
        })
        .await
}

/// The cluster as this node's log and heartbeats see it now.
pub async fn state(cluster: &Cluster, store: &Store) -> Result<ClusterState, StoreError> {
    let status = store.status();
    let addresses: std::collections::HashMap<String, String> =
        cluster.members().into_iter().map(|m| (m.name, m.address)).collect();
    let names: Vec<String> = status.members.iter().map(|m| m.name.clone()).collect();
    let recorded = store
        .view(move |v| {
            names
                .iter()
                .map(|n| {
                    let incarnation = match v.get(META, &incarnation_key(n))? {
                        Some(bytes) => troupe_runtime::codec::decode::<u64>(&bytes)?,
                        None => 0,
                    };
                    let address = v
                        .get(META, &address_key(n))?
                        .map(|b| String::from_utf8_lossy(&b).into_owned());
                    Ok((incarnation, address, super::lease::member_in(v, n)?))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await?;
    let me = cluster.name();
    // A leader can decide about the members now (this node follows one, or leads with a
    // majority answering): their recorded states stand.
    let decided_now = status.leader.is_some() && !status.lead_unconfirmed;
    let (now, wall) = (tokio::time::Instant::now(), troupe_runtime::clock::now());
    let members = status
        .members
        .into_iter()
        .zip(recorded)
        .map(|(m, (incarnation, recorded_address, record))| {
            let heard = match m.name == me {
                true => Some(wall),
                false => cluster.leases.heard(&m.name).and_then(|at| {
                    chrono::Duration::from_std(now.saturating_duration_since(at))
                        .ok()
                        .map(|ago| wall - ago)
                }),
            };
            let progress = match m.name == me {
                true => Some((0, cluster.leases.running())),
                false => cluster.progress(&m.name).map(|p| (p.applied_behind, p.running)),
            };
            let state = shown_state(
                record.map(|r| r.state),
                cluster.status(&m.name) == Some(MemberStatus::Up),
                decided_now,
            );
            LogMember {
                // As it said last, else as it recorded at its last start (a member not heard
                // from since this node started: it showed none).
                address: addresses
                    .get(&m.name)
                    .filter(|a| !a.is_empty())
                    .cloned()
                    .or(recorded_address)
                    .unwrap_or_default(),
                state,
                last_heartbeat: heard,
                lag: m
                    .matched
                    .filter(|_| !status.lead_unconfirmed)
                    .map(|matched| status.last_log_index.saturating_sub(matched)),
                applied_lag: progress.map(|(behind, _)| behind),
                working: progress.map(|(_, running)| running),
                role: m.role,
                rooms: cluster.rooms_of(&m.name),
                name: m.name,
                incarnation,
            }
        })
        .collect();
    Ok(ClusterState {
        // A leadership no majority answers is not shown: another member may lead now.
        leader: status.leader.filter(|_| !status.lead_unconfirmed),
        term: status.term,
        commit_index: status.commit_index,
        members,
    })
}

/// A member's state as `cluster { members }` shows it (see [`LogMember::state`]): its
/// recorded state, if any; whether this node hears from it; whether a leader can decide now.
fn shown_state(
    recorded: Option<super::lease::MemberState>,
    heard: bool,
    decided_now: bool,
) -> super::lease::MemberState {
    use super::lease::MemberState::{Suspect, Up};
    match recorded {
        // A freeze of both followers showed them UP on their leader for as long as it lasted,
        // and a lone restarted member showed the stopped others UP.
        Some(Up) if !heard && !decided_now => Suspect,
        Some(state) => state,
        None if heard => Up,
        // Not DOWN: a leader that lost its majority showed members it could not judge DOWN,
        // their work unmoved and no MEMBER_DOWN committed.
        None => Suspect,
    }
}

/// The key of the last term a leader announced, in the replicated `meta` table.
const ANNOUNCED_TERM: &str = "leader@term";

/// The write that announces this node's leadership at `term` (`LEADER_CHANGED`), given the
/// last announced term as this node's replica holds it (`recorded`); `None` when that term
/// is not older. The write holds only if no other announcement was applied since the one
/// read: a restarted ex-leader leads its old term for a few milliseconds at start, before
/// it hears of the later ones, and its announcement must not go into the log after theirs
/// (the terms of `LEADER_CHANGED` never go backwards).
fn announcement(node: &str, term: u64, recorded: Option<Vec<u8>>) -> Option<Batch> {
    let last = recorded
        .as_deref()
        .and_then(|b| troupe_runtime::codec::decode::<u64>(b).ok())
        .unwrap_or(0);
    if term <= last {
        return None;
    }
    let event = NewEvent::new(
        "LEADER_CHANGED",
        Some(node.to_owned()),
        json!({ "leader": node, "term": term }),
    );
    let bytes = troupe_runtime::codec::encode(&term).ok()?;
    Some(
        Batch::new()
            .require(META, ANNOUNCED_TERM, recorded)
            .put(META, ANNOUNCED_TERM, bytes)
            .event(event),
    )
}

/// Records `LEADER_CHANGED` each time this node starts to lead a cluster of more than one
/// member, at a term no leader announced yet. Runs for the node's lifetime.
pub(crate) async fn announce_leadership(store: Store, node: String) {
    // Changed only when the leader, the vote or the membership does (the whole metrics
    // change with every entry, and woke this chore on each).
    let mut metrics = store.raft().server_metrics();
    let mut announced = 0;
    loop {
        // Read and released at once: the Raft core waits while the value is borrowed.
        let (leads, term, members) = {
            let m = metrics.borrow_and_update();
            (
                m.current_leader == Some(m.id),
                m.vote.leader_id().get_term(),
                m.membership_config.membership().nodes().count(),
            )
        };
        if leads && term > announced && members > 1 {
            announced = term;
            let written = match store.get(META, ANNOUNCED_TERM).await {
                Ok(recorded) => match announcement(&node, term, recorded) {
                    Some(batch) => store.write(batch).await.map(|_| ()),
                    None => Ok(()),
                },
                Err(e) => Err(e),
            };
            match written {
                Ok(()) => {}
                Err(StoreError::Stale(_)) => {
                    tracing::info!(term, "a later leader was announced first: this term is not")
                }
                Err(e) => tracing::warn!(error = %e, term, "could not record this node's leadership"),
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// A member no longer in the log's membership (it left), as the store last recorded it.
pub(crate) async fn departed(store: &Store, node: &str) -> Result<LogMember, crate::error::ApiError> {
    let name = node.to_owned();
    let (incarnation, address, record) = store
        .view(move |v| {
            let incarnation = match v.get(META, &incarnation_key(&name))? {
                Some(bytes) => troupe_runtime::codec::decode::<u64>(&bytes)?,
                None => 0,
            };
            let address = v
                .get(META, &address_key(&name))?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            Ok((incarnation, address, super::lease::member_in(v, &name)?))
        })
        .await?;
    let record =
        record.ok_or_else(|| crate::error::ApiError::NotFound(format!("{node} is not a member of the cluster")))?;
    Ok(LogMember {
        name: node.to_owned(),
        address,
        role: Role::Learner,
        state: record.state,
        last_heartbeat: None,
        lag: None,
        applied_lag: None,
        working: None,
        incarnation,
        rooms: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_nobody_hears_while_no_leader_can_decide_is_shown_suspect_not_as_last_recorded() {
        use super::super::lease::MemberState::{Down, Left, Suspect, Up};
        // A leader decides: what it recorded stands, heard from or not.
        assert_eq!(shown_state(Some(Up), false, true), Up);
        assert_eq!(shown_state(Some(Down), true, true), Down);
        // None can: UP is not said of a member nobody hears.
        assert_eq!(shown_state(Some(Up), false, false), Suspect);
        assert_eq!(shown_state(Some(Up), true, false), Up);
        assert_eq!(shown_state(Some(Down), false, false), Down);
        assert_eq!(shown_state(Some(Left), false, false), Left);
        // Never decided upon: as this node hears it.
        assert_eq!(shown_state(None, true, true), Up);
        assert_eq!(shown_state(None, false, true), Suspect);
    }

    #[tokio::test]
    async fn a_leaders_announcement_never_goes_into_the_log_after_a_later_terms() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
        let terms = || async {
            let events = store
                .events_of_kinds(0, vec!["LEADER_CHANGED".into()], 10)
                .await
                .unwrap();
            events
                .iter()
                .map(|e| e.data["term"].as_u64().unwrap())
                .collect::<Vec<_>>()
        };
        // An ex-leader read its replica before term 7 was announced, and leads term 5 for a
        // moment at start.
        let stale = store.get(META, ANNOUNCED_TERM).await.unwrap();
        store.write(announcement("b", 7, None).unwrap()).await.unwrap();
        let refused = store.write(announcement("a", 5, stale).unwrap()).await;
        assert!(matches!(refused, Err(StoreError::Stale(_))), "{refused:?}");
        // Read now, its replica says term 7 is announced: nothing to write.
        let recorded = store.get(META, ANNOUNCED_TERM).await.unwrap();
        assert!(announcement("a", 5, recorded.clone()).is_none());
        assert!(announcement("a", 7, recorded.clone()).is_none());
        store.write(announcement("a", 8, recorded).unwrap()).await.unwrap();
        assert_eq!(terms().await, vec![7, 8]);
    }
}

//! This node's view of the cluster: who is there, who answered lately, and asking every
//! reachable peer at once while saying which ones could not be asked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::remote::{self, Service};
use crate::error::ApiError;

/// Silence after which a peer is reported DOWN.
const SUSPECT_AFTER: Duration = Duration::from_secs(3);
/// How recently a peer must have answered a beat for work to be placed on it: four beats.
/// Placed on until its silence reached 3 s (SUSPECT), a frozen node was sent submits that
/// each waited 5 s for it and failed ("it may have acted"): six in a 15 s freeze of one of
/// three nodes under 24 clients. A task not placed on a peer is queued here, and handed to
/// a member with room as soon as one has it.
const PLACE_WITHIN: Duration = Duration::from_millis(4 * super::lease::BEAT.as_millis() as u64);
/// How long a cluster-wide list waits for each peer's part.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: String,
    pub cluster_address: String,
    pub gateway_address: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    Up,
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub address: String,
    pub status: MemberStatus,
}

/// Answers gathered from peers, and the peers whose part is missing.
#[derive(Debug, Clone)]
pub struct Gathered<T> {
    pub answers: Vec<T>,
    /// Names of known peers that are down, disconnected or did not answer in time.
    pub missing: Vec<String>,
}

#[derive(Clone)]
pub struct Cluster {
    me: Arc<Mutex<PeerInfo>>,
    /// Every peer heard from since start, by name.
    seen: Arc<Mutex<BTreeMap<String, Heard>>>,
    /// Silence after which a peer is dropped from cluster-wide lists.
    drop_after: Duration,
    /// Where moved entities live now.
    directory: super::directory::Directory,
    /// This node's lease and the leader's grants (see [`super::lease`]).
    pub(crate) leases: super::lease::Leases,
    /// This node's store, for the log index a peer call's answer carries (see
    /// [`super::remote::noting_peer_commits`]).
    store: Option<troupe_runtime::store::WeakStore>,
    /// The peers' requests this node's domain services answer (closed as it stops).
    peer_calls: super::remote::PeerCalls,
    /// The last session that closed before it was authenticated: its peer's address, when.
    refused: Arc<Mutex<Option<(String, Instant)>>>,
    /// Set when a peer said that this node is a member that left the cluster (see
    /// [`Cluster::dismissed`]).
    dismissal: Arc<tokio::sync::watch::Sender<Option<String>>>,
    /// When a peer first said so, while this node's replica did not.
    told_left: Arc<Mutex<Option<Instant>>>,
    /// This process among the node's starts (random, never 0): a peer that answers under
    /// another restarted.
    boot: u64,
}

/// What this node knows of a peer it has heard from.
#[derive(Debug, Clone)]
struct Heard {
    address: String,
    /// When it last answered a heartbeat.
    last: Instant,
    /// Silent past `drop_after`: no longer asked for, nor named missing, until it answers.
    dropped: bool,
    /// What room its agents had, as its last beat said.
    rooms: BTreeMap<String, crate::task::Room>,
    /// What its answer to the last beat said of its progress; `None` once a beat went
    /// unanswered.
    progress: Option<Progress>,
    /// Its process, as its last answer named it (0: a build that did not say).
    boot: u64,
    /// That process is another than the one that answered before it, and has not said its
    /// work runs since (kept while beats go unanswered).
    restarting: bool,
}

/// What a peer's answer to a beat says of how far it has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// How many log entries this node had applied, when it sent the beat, that the peer had
    /// not applied when it answered.
    pub applied_behind: u64,
    /// Its work runs (it holds a lease and started it).
    pub running: bool,
}

/// What membership keeps of a peer's answer to a beat (the beats are sent by the failover
/// room, which keeps the rest of each answer).
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub name: String,
    pub address: String,
    /// What room its agents have for each capability they serve.
    pub rooms: BTreeMap<String, crate::task::Room>,
    pub progress: Progress,
    /// Its process (see [`Cluster::boot`]).
    pub boot: u64,
}

/// Whether work may be placed on a peer heard as `heard`, at `now`.
fn placeable(heard: &Heard, now: Instant) -> bool {
    now.saturating_duration_since(heard.last) <= PLACE_WITHIN
}

/// The peers to drop now: heard from before, not dropped yet, and silent past `drop_after`.
fn to_drop<'a>(
    seen: impl IntoIterator<Item = (&'a String, &'a Heard)>,
    now: Instant,
    drop_after: Duration,
) -> Vec<(String, Duration)> {
    seen.into_iter()
        .filter(|(_, h)| !h.dropped && now.saturating_duration_since(h.last) > drop_after)
        .map(|(name, h)| (name.clone(), now.saturating_duration_since(h.last)))
        .collect()
}

impl Cluster {
    pub fn new(me: PeerInfo) -> Self {
        Self {
            me: Arc::new(Mutex::new(me)),
            seen: Arc::default(),
            drop_after: Duration::from_secs(60),
            directory: Default::default(),
            leases: Default::default(),
            store: None,
            peer_calls: Default::default(),
            refused: Arc::default(),
            dismissal: Arc::new(tokio::sync::watch::channel(None).0),
            told_left: Arc::default(),
            boot: rand::random::<u64>() | 1,
        }
    }

    /// This process among the node's starts, as its answers to beats name it.
    pub(crate) fn boot(&self) -> u64 {
        self.boot
    }

    /// Notes that a peer said, at `now` and in the words `why`, that this node is a member
    /// that left the cluster while its replica does not say so. Once that has been said for
    /// a second the node is dismissed ([`Cluster::dismissed`]): a member that left as it ran
    /// applies the entry within that, one forgotten while it was stopped never does.
    pub(crate) fn told_left(&self, now: Instant, why: String) {
        let since = *self
            .told_left
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(now);
        if now.saturating_duration_since(since) < Duration::from_secs(1) {
            return;
        }
        self.dismissal.send_if_modified(|was| {
            let first = was.is_none();
            if first {
                *was = Some(why);
            }
            first
        });
    }

    /// Resolves, with a peer's words, once a peer said that this node left the cluster.
    pub async fn dismissed(&self) -> String {
        let mut said = self.dismissal.subscribe();
        let why = match said.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            // The sender lives as long as this handle: never.
            Err(_) => std::future::pending().await,
        };
        why
    }

    /// Notes a session with `peer` that closed before it was authenticated: the two nodes
    /// do not share a cookie (the other side logs `auth_fail`), or it is no Troupe node.
    pub(crate) fn session_refused(&self, peer: String) {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some((peer, Instant::now()));
    }

    /// The peer whose session last closed before it was authenticated, within `within`.
    pub(crate) fn refused_within(&self, within: Duration) -> Option<String> {
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        refused
            .as_ref()
            .filter(|(_, at)| at.elapsed() <= within)
            .map(|(peer, _)| peer.clone())
    }

    /// The store this node's answers to peers read their applied log index from.
    pub fn with_store(mut self, store: &troupe_runtime::store::Store) -> Self {
        self.store = Some(store.downgrade());
        self
    }

    /// The peers' requests this node's domain services are answering.
    pub fn peer_calls(&self) -> &super::remote::PeerCalls {
        &self.peer_calls
    }

    /// The last log entry this node applied (0 without a store).
    pub fn applied_index(&self) -> u64 {
        self.store
            .as_ref()
            .and_then(troupe_runtime::store::WeakStore::upgrade)
            .map_or(0, |s| s.applied_index())
    }

    /// Where moved entities live now.
    pub fn directory(&self) -> &super::directory::Directory {
        &self.directory
    }

    /// The peer that holds the entity `id` (see [`super::directory`]); `None` when this node
    /// does, or when the id names no node (such ids are looked up here only).
    pub fn holder(&self, id: &str) -> Option<String> {
        self.directory().node_of(id).filter(|node| *node != self.name())
    }

    /// Whether this node holds the entity `id`.
    pub fn holds(&self, id: &str) -> bool {
        self.holder(id).is_none()
    }

    /// Drops a peer silent for longer than `after` from cluster-wide lists.
    pub fn with_drop_after(mut self, after: Duration) -> Self {
        self.drop_after = after;
        self
    }

    pub fn me(&self) -> PeerInfo {
        self.me.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn name(&self) -> String {
        self.me().name
    }

    pub fn set_gateway_address(&self, addr: String) {
        self.me.lock().unwrap_or_else(|p| p.into_inner()).gateway_address = Some(addr);
    }

    /// Peers whose node service (every member's, [`remote::MEMBER_ROLE`]) is connected now.
    fn connected(&self) -> BTreeSet<String> {
        let me = self.name();
        let prefix = remote::group(remote::MEMBER_ROLE, "");
        ractor::pg::which_groups()
            .into_iter()
            .filter_map(|g| g.strip_prefix(&prefix).map(str::to_owned))
            .filter(|name| *name != me && remote::is_connected(remote::MEMBER_ROLE, name))
            .collect()
    }

    /// UP if the node answered a heartbeat lately (or is this node), DOWN if it did before
    /// and has gone quiet, `None` if it was never heard from.
    pub fn status(&self, name: &str) -> Option<MemberStatus> {
        if name == self.name() {
            return Some(MemberStatus::Up);
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(name).map(|heard| {
            if heard.last.elapsed() <= SUSPECT_AFTER {
                MemberStatus::Up
            } else {
                MemberStatus::Down
            }
        })
    }

    /// Fails at once for a peer known to be down: a frozen peer must not cost every caller
    /// a full timeout. Said as this node's hearing, not as the cluster's verdict (`cluster { members }`
    /// may show the member `SUSPECT` until the leader declares it `DOWN`).
    pub fn ensure_reachable(&self, name: &str) -> Result<(), ApiError> {
        if self.status(name) == Some(MemberStatus::Down) {
            let silent = self
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .map_or(Duration::ZERO, |heard| heard.last.elapsed());
            return Err(ApiError::Unavailable(format!(
                "node {name} has not answered this node for {:.1} s (stopped, frozen or cut off from it), \
                 and was not asked: try again once it answers, or once the leader declares it DOWN and its \
                 work moves",
                silent.as_secs_f64()
            )));
        }
        Ok(())
    }

    /// The peers heard from lately (`UP`), from what the heartbeats recorded: cheap enough
    /// for every request (no walk of the process groups). A session may have closed since.
    pub fn up_peers(&self) -> Vec<String> {
        let me = self.name();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter()
            .filter(|(name, heard)| **name != me && heard.last.elapsed() <= SUSPECT_AFTER)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// What room each peer that answered a beat within [`PLACE_WITHIN`] and is connected now
    /// has for `capability`, as its last beat said (at most a beat and a scheduler's
    /// publication old: 350 ms); a peer none of whose agents serves it has an empty room. A
    /// peer whose session closed (a node that stopped) or that went quiet (frozen, cut off)
    /// has none.
    pub fn peer_rooms(&self, capability: &str) -> Vec<(String, crate::task::Room)> {
        let me = self.name();
        let now = Instant::now();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter()
            .filter(|(name, heard)| **name != me && placeable(heard, now))
            .filter(|(name, _)| remote::is_connected(remote::MEMBER_ROLE, name))
            .map(|(name, heard)| (name.clone(), heard.rooms.get(capability).copied().unwrap_or_default()))
            .collect()
    }

    /// Forgets that `peer` restarted: it was declared DOWN meanwhile, and starts its work only
    /// once it is UP again, as any member back from DOWN.
    pub(crate) fn forget_restart(&self, peer: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(heard) = seen.get_mut(peer) {
            heard.restarting = false;
        }
    }

    /// Whether `peer` is another process than the one that answered before it (it
    /// restarted) and has not said its work runs since, if it answered the last beat.
    pub(crate) fn restarted(&self, peer: &str) -> Option<bool> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(peer)
            .and_then(|heard| heard.progress.map(|_| heard.restarting))
    }

    /// How far `peer` had come by its answer to the last beat, if it answered that beat.
    pub(crate) fn progress(&self, peer: &str) -> Option<Progress> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(peer).and_then(|heard| heard.progress)
    }

    /// What room `peer`'s agents had, as its last beat said (empty for this node and for a
    /// peer not heard from).
    pub fn rooms_of(&self, peer: &str) -> BTreeMap<String, crate::task::Room> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(peer).map(|heard| heard.rooms.clone()).unwrap_or_default()
    }

    /// The peers connected now.
    pub fn peers(&self) -> Vec<String> {
        let me = self.name();
        self.connected().into_iter().filter(|n| *n != me).collect()
    }

    /// Asks every reachable peer's `S` service at once, waiting at most [`GATHER_TIMEOUT`]
    /// for each. Peers that are down, gone or too slow are named in `missing`; peers dropped
    /// after a long silence are neither asked nor named.
    pub async fn gather<S: Service>(&self, request: &S::Request) -> Gathered<S::Response> {
        let connected = self.connected();
        let (known, dropped): (BTreeSet<String>, BTreeSet<String>) = {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            (
                seen.iter()
                    .filter(|(_, h)| !h.dropped)
                    .map(|(n, _)| n.clone())
                    .collect(),
                seen.iter().filter(|(_, h)| h.dropped).map(|(n, _)| n.clone()).collect(),
            )
        };
        let me = self.name();
        let mut missing = Vec::new();
        let mut ask = Vec::new();
        for name in connected.union(&known).filter(|n| **n != me && !dropped.contains(*n)) {
            if self.status(name) == Some(MemberStatus::Down) || !connected.contains(name) {
                missing.push(name.clone());
            } else {
                ask.push(name.clone());
            }
        }
        let call = remote::Call {
            key: None,
            request: request.clone(),
        };
        let calls = ask.iter().map(|name| remote::call::<S>(name, &call, GATHER_TIMEOUT));
        let mut answers = Vec::new();
        for (name, answer) in ask.iter().zip(futures::future::join_all(calls).await) {
            match answer {
                Ok(a) => answers.push(a),
                Err(e) => {
                    tracing::warn!(peer = %name, error = %e, "a peer's part of a cluster answer is missing");
                    missing.push(name.clone());
                }
            }
        }
        missing.sort();
        Gathered { answers, missing }
    }

    /// Records the peers that answered a beat at `now`, and marks dropped those silent past
    /// `drop_after` (no longer asked for, nor named missing, until they answer): the peers
    /// dropped just now, with their silence. A frozen peer keeps its TCP session, so only
    /// its silence tells it apart.
    pub(crate) fn heard(&self, answers: Vec<Answer>, now: Instant) -> Vec<(String, Duration)> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // How far a peer that did not answer this beat has come is unknown from now.
        for heard in seen.values_mut() {
            heard.progress = None;
        }
        for answer in answers {
            let before = seen.get(&answer.name);
            let restarted = !answer.progress.running
                && before.is_some_and(|h| match h.boot == answer.boot {
                    // The same process: restarted still, until it says its work runs.
                    true => h.restarting,
                    false => h.boot != 0 && answer.boot != 0,
                });
            let heard = Heard {
                address: answer.address,
                last: now,
                dropped: false,
                rooms: answer.rooms,
                progress: Some(answer.progress),
                boot: answer.boot,
                restarting: restarted,
            };
            seen.insert(answer.name, heard);
        }
        let dropped = to_drop(seen.iter(), now, self.drop_after);
        for (name, _) in &dropped {
            if let Some(h) = seen.get_mut(name) {
                h.dropped = true;
            }
        }
        dropped
    }

    /// This node and every peer it has heard from since it started.
    pub fn members(&self) -> Vec<Member> {
        let me = self.me();
        let seen: Vec<(String, String)> = {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.iter().map(|(n, h)| (n.clone(), h.address.clone())).collect()
        };
        let mut out: Vec<Member> = seen
            .into_iter()
            .filter(|(name, _)| *name != me.name)
            .map(|(name, address)| Member {
                status: self.status(&name).unwrap_or(MemberStatus::Down),
                name,
                address,
            })
            .collect();
        out.push(Member {
            name: me.name,
            address: me.cluster_address,
            status: MemberStatus::Up,
        });
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_told_it_left_is_dismissed_only_once_told_for_a_second() {
        let cluster = Cluster::new(PeerInfo {
            name: "gamma".into(),
            cluster_address: "127.0.0.1:1".into(),
            gateway_address: None,
        });
        let t0 = Instant::now();
        // A member that left as it ran applies the entry within that second: not dismissed.
        cluster.told_left(t0, "first".into());
        cluster.told_left(t0 + Duration::from_millis(750), "again".into());
        assert!(cluster.dismissal.borrow().is_none(), "not within the second");
        cluster.told_left(
            t0 + Duration::from_millis(1000),
            "the sender is a member that left the cluster".into(),
        );
        cluster.told_left(t0 + Duration::from_millis(1250), "said again".into());
        let why = tokio::time::timeout(Duration::from_secs(5), cluster.dismissed())
            .await
            .unwrap();
        assert_eq!(
            why, "the sender is a member that left the cluster",
            "the first words are kept"
        );
    }

    fn heard(last: Instant, dropped: bool) -> Heard {
        Heard {
            address: "127.0.0.1:1".into(),
            last,
            dropped,
            rooms: BTreeMap::new(),
            progress: None,
            boot: 0,
            restarting: false,
        }
    }

    #[test]
    fn a_peer_that_answers_as_another_process_restarted_until_it_says_its_work_runs() {
        let cluster = Cluster::new(PeerInfo {
            name: "a".into(),
            cluster_address: "127.0.0.1:1".into(),
            gateway_address: None,
        });
        let answer = |boot: u64, running: bool| Answer {
            name: "b".into(),
            address: "127.0.0.1:2".into(),
            rooms: BTreeMap::new(),
            progress: Progress {
                applied_behind: 0,
                running,
            },
            boot,
        };
        let restarted = || cluster.restarted("b");
        let now = Instant::now();
        // Its first answer is no restart, working or not (it just joined).
        cluster.heard(vec![answer(7, false)], now);
        assert_eq!(restarted(), Some(false));
        cluster.heard(vec![answer(7, true)], now);
        // Another process, its work not started yet: restarted, through a beat it missed.
        cluster.heard(vec![answer(9, false)], now);
        assert_eq!(restarted(), Some(true));
        cluster.heard(Vec::new(), now);
        assert_eq!(restarted(), None);
        cluster.heard(vec![answer(9, false)], now);
        assert_eq!(restarted(), Some(true));
        // Its work runs: done.
        cluster.heard(vec![answer(9, true)], now);
        assert_eq!(restarted(), Some(false));
        // Declared DOWN meanwhile, it is forgotten: its work starts once it is UP.
        cluster.heard(vec![answer(11, false)], now);
        cluster.forget_restart("b");
        cluster.heard(vec![answer(11, false)], now);
        assert_eq!(restarted(), Some(false));
        // A build that names no process never restarted as far as anyone can tell.
        cluster.heard(vec![answer(0, false)], now);
        assert_eq!(restarted(), Some(false));
    }

    #[test]
    fn work_is_placed_on_a_peer_only_within_four_beats_of_its_last_answer() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(placeable(&heard(t0, false), at(250)));
        assert!(placeable(&heard(t0, false), at(1000)));
        // Frozen a second ago: nothing more is placed on it.
        assert!(!placeable(&heard(t0, false), at(1001)));
        assert!(!placeable(&heard(t0, false), at(2500)));
    }

    #[test]
    fn a_peer_is_dropped_once_past_its_silence_and_not_before() {
        let t0 = Instant::now();
        let after = Duration::from_secs(60);
        let mut seen = BTreeMap::new();
        seen.insert("quiet".to_string(), heard(t0, false));
        seen.insert("talking".to_string(), heard(t0 + Duration::from_secs(50), false));
        seen.insert("gone".to_string(), heard(t0, true));
        assert!(to_drop(seen.iter(), t0 + Duration::from_secs(60), after).is_empty());
        let now = t0 + Duration::from_secs(61);
        assert_eq!(
            to_drop(seen.iter(), now, after),
            vec![("quiet".to_string(), Duration::from_secs(61))]
        );
    }
}

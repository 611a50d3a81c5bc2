//! What a running agent shows of itself (its processes' usage, their process groups, its
//! heartbeat and health, its scheduler counters), and the node's live supervision tree:
//! observed on the node that runs them, never replicated. Each node samples its own at most
//! once a [`SAMPLE_EVERY`] and the sample travels with its heartbeat answers, so a read of a
//! peer's agent or tree shows that node's last sample, with the time it was taken, and asks
//! no peer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use troupe_runtime::supervision::SupervisorInfo;

use super::{AgentStats, Probe, Usage};

/// How old this node's sample may be before a beat answer asks for a new one.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What an agent's actor says of itself: usage of its processes and health.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentLive {
    pub usage: Option<Usage>,
    /// When the backend last showed a sign of life (process agents).
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub healthy: bool,
    pub paused: bool,
    pub process_groups: Vec<u32>,
    /// Its counters as its node's scheduler holds them: the tasks it runs, its breaker and
    /// the figures of its recent attempts live there only.
    #[serde(default)]
    pub stats: Option<AgentStats>,
    /// When this was observed (on the node that runs the agent).
    #[serde(default)]
    pub seen_at: Option<DateTime<Utc>>,
}

impl AgentLive {
    pub fn from_probe(p: Probe) -> Self {
        let now = troupe_runtime::clock::now();
        Self {
            usage: p.usage,
            last_heartbeat: p
                .silent_for
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| now - d),
            healthy: p.healthy,
            paused: p.paused,
            process_groups: p.process_groups,
            stats: None,
            seen_at: Some(now),
        }
    }
}

/// One node's agents as it sampled them: each running agent, by id, and its supervision
/// tree.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub at: Option<DateTime<Utc>>,
    pub agents: Vec<(String, AgentLive)>,
    /// Which of the node's trees it was as of `at`: a new number each time a sample finds it
    /// changed (0: none sampled yet, or a build that did not send it).
    #[serde(default)]
    pub tree_version: u64,
    /// The tree itself, when the asker may not hold this version (see [`RESEND_TREE`]);
    /// `None` too when the tree did not answer in time.
    #[serde(default)]
    pub tree: Option<SupervisorInfo>,
}

/// How often a beat answer carries the tree to an asker it was sent to already, unchanged:
/// an answer that was lost costs that asker at most this.
pub const RESEND_TREE: Duration = Duration::from_secs(5);

/// Samples every agent this node runs, and its tree.
pub type Sampler =
    Arc<dyn Fn() -> BoxFuture<'static, (Vec<(String, AgentLive)>, Option<SupervisorInfo>)> + Send + Sync>;

/// This node's last sample of its agents, and each peer's last report.
#[derive(Clone, Default)]
pub struct Observed {
    here: Arc<Mutex<Here>>,
    sampler: Arc<OnceLock<Sampler>>,
    peers: Arc<Mutex<HashMap<String, Arc<Report>>>>,
    /// Each peer's tree: its version, when it was last seen as it is, the tree.
    trees: Arc<Mutex<HashMap<String, PeerTree>>>,
}

/// A peer's tree: its version, when it was last seen as it is, the tree.
type PeerTree = (u64, Option<DateTime<Utc>>, SupervisorInfo);

#[derive(Default)]
struct Here {
    report: Arc<Report>,
    sampling: bool,
    /// When the last sample began.
    sampled: Option<tokio::time::Instant>,
    /// The tree version each asker was last sent, and when.
    sent: HashMap<String, (u64, tokio::time::Instant)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Observed {
    /// How this node samples its agents (set once its agents service exists).
    pub fn sample_with(&self, sampler: Sampler) {
        let _ = self.sampler.set(sampler);
    }

    /// This node's last sample (with its tree), for a beat answer. One older than
    /// [`SAMPLE_EVERY`] starts a new sample, which the next answers carry: an answer never
    /// waits for the agents.
    pub fn here(&self) -> Arc<Report> {
        let mut here = lock(&self.here);
        let now = troupe_runtime::clock::now();
        let stale = here.sampled.is_none_or(|at| at.elapsed() >= SAMPLE_EVERY);
        if stale && !here.sampling {
            if let Some(sampler) = self.sampler.get().cloned() {
                here.sampling = true;
                here.sampled = Some(tokio::time::Instant::now());
                let cell = self.here.clone();
                tokio::spawn(async move {
                    let (agents, tree) = sampler().await;
                    let mut here = lock(&cell);
                    let tree_version = match tree == here.report.tree {
                        true => here.report.tree_version,
                        false => here.report.tree_version + 1,
                    };
                    here.report = Arc::new(Report {
                        at: Some(now),
                        agents,
                        tree_version,
                        tree,
                    });
                    here.sampling = false;
                });
            }
        }
        here.report.clone()
    }

    /// This node's last sample as the answer to `asker`'s beat: the tree only when `asker`
    /// was not sent this version, or not for [`RESEND_TREE`].
    pub fn answer_for(&self, asker: &str) -> Report {
        let report = self.here();
        let mut here = lock(&self.here);
        let due = here
            .sent
            .get(asker)
            .is_none_or(|(version, at)| *version != report.tree_version || at.elapsed() >= RESEND_TREE);
        if due {
            here.sent
                .insert(asker.to_owned(), (report.tree_version, tokio::time::Instant::now()));
        }
        Report {
            at: report.at,
            agents: report.agents.clone(),
            tree_version: report.tree_version,
            tree: report.tree.clone().filter(|_| due),
        }
    }

    /// Keeps what `peer` reported with its last beat answer. A tree left out is the one
    /// held, seen as it is at this report's time when its version is the one held.
    pub fn heard(&self, peer: &str, report: Arc<Report>) {
        {
            let mut trees = lock(&self.trees);
            match &report.tree {
                Some(tree) => {
                    trees.insert(peer.to_owned(), (report.tree_version, report.at, tree.clone()));
                }
                None => {
                    if let Some((version, at, _)) = trees.get_mut(peer) {
                        if *version == report.tree_version {
                            *at = report.at;
                        }
                    }
                }
            }
        }
        lock(&self.peers).insert(peer.to_owned(), report);
    }

    /// Every agent each peer last reported, with the time of that report.
    pub fn of_peers(&self) -> Vec<(String, AgentLive)> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for report in peers.values() {
            for (id, live) in &report.agents {
                let mut live = live.clone();
                live.seen_at = report.at;
                out.push((id.clone(), live));
            }
        }
        out
    }

    /// `peer`'s supervision tree as it last reported it, with the time of the last sample
    /// that found it so.
    pub fn tree_of(&self, peer: &str) -> Option<(Option<DateTime<Utc>>, SupervisorInfo)> {
        let trees = lock(&self.trees);
        let (_, at, tree) = trees.get(peer)?;
        Some((*at, tree.clone()))
    }

    /// The agent `id` as `peer` last reported it (its `seen_at` the time of that sample);
    /// `None` when no report of `peer` names it (not running there, or not heard yet).
    pub fn of_peer(&self, peer: &str, id: &str) -> Option<AgentLive> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let report = peers.get(peer)?;
        let (_, live) = report.agents.iter().find(|(a, _)| a == id)?;
        let mut live = live.clone();
        live.seen_at = report.at;
        Some(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_beat_answer_carries_the_last_sample_at_once_and_a_peers_agent_is_read_from_its_report() {
        let observed = Observed::default();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        observed.sample_with({
            let calls = calls.clone();
            Arc::new(move || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let tree = SupervisorInfo {
                    name: format!("root{n}"),
                    strategy: troupe_runtime::supervision::Strategy::OneForOne,
                    intensity: None,
                    children: Vec::new(),
                };
                Box::pin(async move { (vec![(format!("a{n}"), AgentLive::default())], Some(tree)) })
            })
        });
        assert!(
            observed.here().agents.is_empty(),
            "nothing sampled yet: answered at once"
        );
        tokio::task::yield_now().await;
        assert_eq!(observed.here().agents[0].0, "a0");
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "a fresh sample is kept"
        );
        // Peers' reports: the agent as its node saw it, at the time it was sampled.
        observed.heard("b", observed.here());
        let seen = observed.of_peer("b", "a0").unwrap();
        assert_eq!(seen.seen_at, observed.here().at);
        assert!(observed.of_peer("b", "nope").is_none());
        assert!(observed.of_peer("c", "a0").is_none());
        let (at, tree) = observed.tree_of("b").unwrap();
        assert_eq!((at, tree.name.as_str()), (observed.here().at, "root0"));
        assert!(observed.tree_of("c").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_tree_goes_to_each_asker_when_it_changed_or_every_few_seconds_and_is_kept_in_between() {
        let (asker, answerer) = (Observed::default(), Observed::default());
        let names = Arc::new(Mutex::new("one"));
        answerer.sample_with({
            let names = names.clone();
            Arc::new(move || {
                let tree = SupervisorInfo {
                    name: lock(&names).to_string(),
                    strategy: troupe_runtime::supervision::Strategy::OneForOne,
                    intensity: None,
                    children: Vec::new(),
                };
                Box::pin(async move { (Vec::new(), Some(tree)) })
            })
        });
        answerer.here();
        tokio::task::yield_now().await;
        let first = answerer.answer_for("a");
        assert_eq!(first.tree.as_ref().map(|t| t.name.as_str()), Some("one"));
        asker.heard("b", Arc::new(first));
        // The next sample finds the same tree: the answer leaves it out, the asker keeps it,
        // seen as it is at the newer sample's time.
        tokio::time::advance(SAMPLE_EVERY).await;
        answerer.here();
        tokio::task::yield_now().await;
        let same = answerer.answer_for("a");
        assert!(same.tree.is_none(), "unchanged, sent already");
        assert!(answerer.answer_for("c").tree.is_some(), "another asker gets it");
        let at = same.at;
        asker.heard("b", Arc::new(same));
        assert_eq!(
            asker.tree_of("b").map(|(t, tree)| (t, tree.name)),
            Some((at, "one".into()))
        );
        // Changed: sent at once.
        *lock(&names) = "two";
        tokio::time::advance(SAMPLE_EVERY).await;
        answerer.here();
        tokio::task::yield_now().await;
        let changed = answerer.answer_for("a");
        assert_eq!(changed.tree.as_ref().map(|t| t.name.as_str()), Some("two"));
        // Unchanged, and sent longer than RESEND_TREE ago: sent again.
        assert!(answerer.answer_for("a").tree.is_none());
        tokio::time::advance(RESEND_TREE).await;
        assert!(
            answerer.answer_for("a").tree.is_some(),
            "sent again after {RESEND_TREE:?}"
        );
    }
}

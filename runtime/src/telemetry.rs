//! Logging (tracing, text or JSON) and metrics (the `metrics` facade, exported as Prometheus
//! text).

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::io::Write;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global log subscriber; `RUST_LOG` overrides the default `info` level
/// (warnings only from ractor_cluster and openraft, whose info lines are per connection and
/// per election, and from rmcp, whose info line on each MCP connection is the whole peer's
/// description). Their reports that say nothing an operator acts on are left out (see
/// [`KnownNoise`]).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,ractor_cluster=warn,openraft=warn,rmcp=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let lines = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(|| Until {
        said: &LAST_SAID,
        out: std::io::stderr(),
    });
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(KnownNoise::new(SAID_AGAIN_AFTER));
    let _ = match format {
        LogFormat::Text => registry.with(lines).try_init(),
        LogFormat::Json => registry.with(lines.json()).try_init(),
    };
}

/// Whether the process said its last words ([`last_words`]): no log line is written after.
static LAST_SAID: RwLock<bool> = RwLock::new(false);

/// Writes `text` to stderr as the process's last line: no log line is written after it. A
/// node that fails stops with its reason as its last line, as an operator and a supervisor
/// read it; the threads still stopping as the process exits logged after it (openraft's
/// core, stopped, answering its state's last askers with ERROR lines, seen in a fresh
/// clone's test run).
pub fn last_words(text: &str) {
    said_last(&LAST_SAID, text, &mut std::io::stderr());
}

fn said_last(said: &RwLock<bool>, text: &str, out: &mut impl Write) {
    let mut said = said.write().unwrap_or_else(|p| p.into_inner());
    *said = true;
    let _ = writeln!(out, "{text}");
}

/// A log line's way out, until the last words were said: then nowhere. A line being written
/// holds them off until it is.
struct Until<W> {
    said: &'static RwLock<bool>,
    out: W,
}

impl<W: Write> Write for Until<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match *self.said.read().unwrap_or_else(|p| p.into_inner()) {
            true => Ok(buf.len()),
            false => self.out.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match *self.said.read().unwrap_or_else(|p| p.into_inner()) {
            true => Ok(()),
            false => self.out.write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Leaves out what the cluster's libraries report at WARN or ERROR that needs nothing from
/// an operator:
/// - openraft's reports that a member cannot be reached: while one member is down, its
///   replication, its backoff and every leadership check for a read log an ERROR or a WARN
///   each (six a second on the leader of three), for as long as it stays down. Troupe says
///   it once, as the member becomes SUSPECT and DOWN (the failover judge's warnings and the
///   MEMBER_ events), and the cluster view shows it;
/// - openraft's note that a replication answer came from before a membership change, which
///   it ignores (three WARN lines on the leader as a member leaves), that a vote's answer
///   came after its vote changed, which it ignores too (a WARN on every member at each
///   election and at each join), and that a replication stream ended before its answer
///   (a WARN on the leader as a member is promoted), and that a follower answered its
///   replication with a higher vote (a restarted leader's stream of the term it last led,
///   before it learns the others elected another: it follows then, and `LEADER_CHANGED`
///   says who leads);
/// - openraft's report that an append was refused as too large for the transport, with the
///   entries it may carry instead, which it sends next: how a member far behind on big
///   entries catches up a few at a time (docs/cluster.md, Timing), logged as an ERROR and a
///   WARN each time (48 ERROR lines on a leader while a member it caught up was stopped);
/// - ractor_cluster's "unknown child actor exit event", six WARN lines on every member each
///   time a peer's session ends (the proxies of the peer's actors stopping with it);
/// - openraft's note that a write's answer found nobody waiting (its caller gave up: a
///   write's wait for a leader ended), a WARN per such write while a leader has no majority.
///
/// And it says openraft's reports of a member that does not answer in time (frozen, or cut
/// off with its connection open) at most once every [`SAID_AGAIN_AFTER`] each (each place
/// in openraft's code that says it): each of them came again about every second for each
/// such member, 98 ERROR and 113 WARN lines in 33 s on a leader whose two followers were
/// frozen. Said now and then, a follower too slow for its appends still shows. So are the
/// link's refusals of a session under a member's name (`auth_fail`, `duplicate_connection`):
/// a node started under a live member's name made 108 to 237 such WARN lines a try.
struct KnownNoise {
    again_after: Duration,
    said: Mutex<HashMap<tracing::callsite::Identifier, Instant>>,
}

/// How long a report [`KnownNoise`] says now and then is left out after it was said.
const SAID_AGAIN_AFTER: Duration = Duration::from_secs(10);

/// What [`KnownNoise`] says now and then: a target's prefix, and words of one of the event's
/// fields.
const NOW_AND_THEN: &[(&str, &str)] = &[
    ("openraft", "timeout after"),
    // A node started under a member's name (a copied config, a twin pod) has its sessions
    // refused at the link again and again: 108 to 237 lines a try, each the same.
    ("ractor_cluster", "auth_fail"),
    ("ractor_cluster", "duplicate_connection"),
];

impl KnownNoise {
    fn new(again_after: Duration) -> Self {
        Self {
            again_after,
            said: Mutex::default(),
        }
    }

    /// Whether this report, said now and then, was said within the last `again_after`
    /// (else it counts as said now).
    fn said_lately(&self, event: &Event<'_>) -> bool {
        let now = Instant::now();
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        match said.get(&event.metadata().callsite()) {
            Some(at) if now.duration_since(*at) < self.again_after => true,
            _ => {
                said.insert(event.metadata().callsite(), now);
                false
            }
        }
    }
}

/// What [`KnownNoise`] leaves out: a target's prefix, and words of one of the event's fields.
const NOISE: &[(&str, &str)] = &[
    ("openraft", "Unreachable node"),
    ("openraft", "backoff mode: drain events"),
    ("openraft", "membership_log_id changed"),
    ("openraft", "A message will be ignored because vote changed"),
    ("openraft", "weak_tx is dropped, no response is sent to ReplicationCore"),
    ("openraft", "seen a higher vote"),
    ("openraft", "payload too large: hint:"),
    // A client's write whose answer nobody waits for any more (its caller gave up).
    ("openraft", "OneshotConsumer.tx.send: is_ok: false"),
    ("ractor_cluster", "unknown child actor exit event"),
];

impl<S: Subscriber> Layer<S> for KnownNoise {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        if mentions(event, NOISE) {
            return false;
        }
        !mentions(event, NOW_AND_THEN) || !self.said_lately(event)
    }
}

/// Whether `event` is of a target `noise` names and one of its fields holds that target's
/// words.
fn mentions(event: &Event<'_>, noise: &[(&str, &'static str)]) -> bool {
    let target = event.metadata().target();
    let mut mentions = Mentions {
        words: noise
            .iter()
            .filter(|(prefix, _)| target.starts_with(prefix))
            .map(|(_, words)| *words)
            .collect(),
        found: false,
    };
    if mentions.words.is_empty() {
        return false;
    }
    event.record(&mut mentions);
    mentions.found
}

/// Whether one of an event's fields holds one of `words`.
struct Mentions {
    words: Vec<&'static str>,
    found: bool,
}

impl Visit for Mentions {
    fn record_debug(&mut self, _: &Field, value: &dyn Debug) {
        if !self.found {
            let text = format!("{value:?}");
            self.found = self.words.iter().any(|w| text.contains(w));
        }
    }
}

/// Installs the global metrics recorder and returns the handle that renders `/metrics`.
/// Only the first call installs; later calls get a handle to a recorder of their own.
pub fn init_metrics() -> PrometheusHandle {
    let buckets = [
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    let builder = || {
        PrometheusBuilder::new()
            .set_buckets(&buckets)
            .expect("the bucket list is not empty")
    };
    match builder().install_recorder() {
        Ok(handle) => handle,
        Err(_) => builder().build_recorder().handle(),
    }
}

/// How many entities are in each state, published as the gauge `gauge{state}`: each entity's
/// state is recorded as it changes, and the gauges of the states whose count moved are set.
/// What a node's projections of its replica count with (see `crate::store::Projection`), so
/// a gauge is what the tables say, never a tally kept by hand.
pub struct StateCounts<S> {
    gauge: &'static str,
    label: fn(S) -> &'static str,
    states: HashMap<String, S>,
    counts: HashMap<S, i64>,
}

impl<S: Copy + Eq + Hash> StateCounts<S> {
    /// Counts for the gauge `gauge`, each state labelled `state="<label(state)>"`.
    pub fn new(gauge: &'static str, label: fn(S) -> &'static str) -> Self {
        Self {
            gauge,
            label,
            states: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    /// Records entity `id` as in `state` (`None`: not counted here, or gone).
    pub fn set(&mut self, id: &str, state: Option<S>) {
        let before = match state {
            Some(s) => self.states.insert(id.to_owned(), s),
            None => self.states.remove(id),
        };
        if before == state {
            return;
        }
        for (s, by) in [(before, -1), (state, 1)] {
            let Some(s) = s else { continue };
            let count = self.counts.entry(s).or_default();
            *count += by;
            metrics::gauge!(self.gauge, "state" => (self.label)(s)).set(*count as f64);
        }
    }

    /// Forgets every entity (their states' gauges go to 0), as a rebuild starts.
    pub fn clear(&mut self) {
        let ids: Vec<String> = self.states.keys().cloned().collect();
        for id in ids {
            self.set(&id, None);
        }
    }

    /// How many it counts in each state, by label (0s left out).
    pub fn counts(&self) -> std::collections::BTreeMap<&'static str, i64> {
        self.counts
            .iter()
            .filter(|(_, n)| **n != 0)
            .map(|(s, n)| ((self.label)(*s), *n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn no_log_line_is_written_after_the_last_words() {
        let said: &'static RwLock<bool> = Box::leak(Box::new(RwLock::new(false)));
        let mut out = Vec::new();
        let line = |out: &mut Vec<u8>, text: &str| {
            Until { said, out }.write_all(text.as_bytes()).unwrap();
        };
        line(&mut out, "a line\n");
        said_last(said, "troupe: error: the store failed", &mut out);
        line(&mut out, "openraft: rx recv error\n");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a line\ntroupe: error: the store failed\n"
        );
    }

    /// Keeps the messages of the events that reach it.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            struct Message(String);
            impl Visit for Message {
                fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
                    if field.name() == "message" {
                        self.0 = format!("{value:?}");
                    }
                }
            }
            let mut message = Message(String::new());
            event.record(&mut message);
            self.0.lock().unwrap().push(message.0);
        }
    }

    #[test]
    fn the_libraries_known_noise_is_left_out_and_everything_else_kept() {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(KnownNoise::new(SAID_AGAIN_AFTER))
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            let err = "Unreachable node: node c is not connected";
            tracing::error!(target: "openraft::replication", %err, "RPCError");
            tracing::error!(target: "openraft::core::raft_core", error = %err, "timeout while confirming leadership for read request");
            tracing::warn!(target: "openraft::replication", interval = 4, "backoff mode: drain events without processing them");
            tracing::error!(target: "openraft::replication", err = "a message of 458467095 bytes", "RPCError");
            tracing::warn!(target: "troupe_actors::failover::judge", error = %err, "a member's state changed");
            tracing::warn!(target: "openraft::core::raft_core", "membership_log_id changed: msg sent by: Some(T1-N3-27); curr: Some(T1-N3-52); ignore when (UpdateReplicationMatched)");
            tracing::warn!(target: "openraft::core::raft_core", "A message will be ignored because vote changed: msg sent by vote: T1-N4081446998480848380:committed; current my vote: None; when (VoteResponse)");
            tracing::warn!(target: "openraft::replication", "weak_tx is dropped, no response is sent to ReplicationCore");
            tracing::warn!(target: "openraft::replication", error = "seen a higher vote: T2-N58:committed GT mine: T1-N23:committed", "error replication to target=58");
            let big = "RPC(AppendEntries) payload too large: hint:(entries:9)";
            tracing::warn!(target: "openraft::replication", error = %big, "error replication to target=35");
            tracing::error!(target: "openraft::replication", err = %big, "RPCError");
            tracing::warn!(target: "ractor_cluster::node::node_session", "NodeSession b received an unknown child actor exit event from 0.14 - 'Some(\"remote\")'");
            tracing::warn!(target: "ractor_cluster::node", "Node session b exited with 'Some(\"tcp_session_closed\")'");
            tracing::warn!(target: "openraft::raft::responder::impls", "OneshotConsumer.tx.send: is_ok: false");
            // A twin's sessions refused at the link: said once, not at each try.
            for reason in ["auth_fail", "duplicate_connection", "auth_fail"] {
                tracing::warn!(target: "ractor_cluster::node", "Node session c exited with 'Some(\"{reason}\")'");
            }
            // Words of the noise, from elsewhere: kept.
            tracing::warn!(target: "troupe_actors::cluster", "an unknown child actor exit event");
            // A member that does not answer in time: each report said once, not at each
            // heartbeat (the same place twice, for two members: once).
            for target in ["2118692102194410842", "6088899194292530064"] {
                let err = format!("timeout after 100ms when AppendEntries 1389944419405907276->{target}");
                tracing::error!(target: "openraft::replication", %err, "RPCError");
            }
        });
        assert_eq!(
            *seen.0.lock().unwrap(),
            [
                "RPCError",
                "a member's state changed",
                "Node session b exited with 'Some(\"tcp_session_closed\")'",
                "Node session c exited with 'Some(\"auth_fail\")'",
                "an unknown child actor exit event",
                "RPCError"
            ]
        );
    }

    #[test]
    fn a_report_said_now_and_then_is_said_again_once_its_time_passed() {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(KnownNoise::new(Duration::ZERO))
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..2 {
                let err = "timeout after 100ms when AppendEntries 1->2";
                tracing::warn!(target: "openraft::replication", error = %err, "error replication to target=2");
            }
        });
        assert_eq!(seen.0.lock().unwrap().len(), 2);
    }
}

//! When this member snapshots its state, and so purges the log the snapshot covers.
//!
//! openraft's own policy (a snapshot every `snapshot_every` entries) purges the log behind
//! each snapshot whatever a member catching up still needs from it. Under a steady load, a
//! member sent a snapshot then had the log after that snapshot purged while it installed
//! it, was sent the next snapshot, and so on: with 100 entries between snapshots and 16
//! clients writing, a restarted member installed 16 snapshots in 90 s and was still behind.
//! Here the leader holds its next snapshot back while a member it replicates to is catching
//! up (it answered a Raft request lately, and is more than a few appends behind) and would
//! lose log it still needs (or it installs a snapshot, which it answers once installed, and
//! nothing else meanwhile). A member that answers nothing (down, cut off) holds nothing
//! back, and neither does anyone once the log since the last snapshot is [`HELD_AT_MOST`]
//! times the usual. Nor is a member sent a snapshot the log has moved past
//! ([`Seen::purged_past`]): it would need the next one at once.
//!
//! The log is bounded in bytes as well as in entries: a snapshot is due once the entries
//! since the last one take `snapshot_every_bytes`, or twice the tables' file if that is
//! more (an entry may take up to 4 MiB, so 20,000 of them could fill a disk before the
//! first snapshot; see [`Every::with_tables`]), and the entries kept behind a snapshot are
//! purged down to a twentieth of `snapshot_every_bytes` ([`Seen::purge_to_keep`]), never
//! past what a member catching up still needs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::ServerState;

use super::{NodeId, Raft};

/// A member that answered a Raft request this recently is catching up, not gone. openraft
/// goes on sending heartbeats to a member while it streams it a snapshot, so one that takes
/// a snapshot answers every 100 ms; a send that hangs (a member cut off) answers nothing.
/// A member installing a snapshot answers nothing until it installed it (openraft's core
/// answers each request in turn, and the install's answer comes first): it is catching up
/// while the last chunk's send waits for that answer ([`Seen::installing`]).
const ANSWERED_WITHIN: Duration = Duration::from_secs(2);
/// The log since the last snapshot is held back at most this many times the usual, whoever
/// would still need it: the log's file stays bounded.
const HELD_AT_MOST: u64 = 4;
/// How often the rule is looked at, at most (on a change of this member's Raft metrics).
const LOOKED_AT_EVERY: Duration = Duration::from_millis(200);
/// How long a snapshot asked for may take to be built before it is asked for again: a
/// snapshot asked for while the last one was still being built (its metrics not yet
/// moved) was built right after it, and purged the log that a member being sent the first
/// one needed next (found with 300 MB of state: the member installed both).
const BUILT_WITHIN: Duration = Duration::from_secs(600);
/// This member's snapshots, by `event`: `built`, `installed` (sent by its leader), `held`
/// (a snapshot that was due waited for a member catching up).
pub(super) const COUNTED: &str = "troupe_raft_snapshots_total";

/// What this member's Raft network saw of each member it sends to, and how far its own log
/// is purged.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// When each member last answered a Raft request.
    answered: Mutex<HashMap<NodeId, Instant>>,
    /// The members installing a snapshot sent them (its last chunk's send waiting for the
    /// answer), by how many such sends are waiting.
    installing: Mutex<HashMap<NodeId, usize>>,
    /// One past the last entry purged from this member's log (0: none), as its log or its
    /// Raft metrics last said.
    purged: AtomicU64,
    /// The bytes of each entry in this member's log, by index, as written.
    sizes: Mutex<BTreeMap<u64, u64>>,
}

impl Seen {
    fn answers(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Instant>> {
        self.answered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `id` answered a Raft request now.
    pub(super) fn answered(&self, id: NodeId) {
        self.answers().insert(id, Instant::now());
    }

    /// `id` is installing a snapshot, the last chunk of which was just sent, until the
    /// returned guard is dropped (the answer came, or the send gave up).
    pub(super) fn installing(self: &Arc<Self>, id: NodeId) -> Installing {
        *self.installs().entry(id).or_default() += 1;
        Installing { seen: self.clone(), id }
    }

    fn installs(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, usize>> {
        self.installing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the log after a snapshot that ends at `index` is purged here: a member sent
    /// it would need another snapshot as soon as it installed it. openraft keeps sending a
    /// member it cannot reach the snapshot it opened first, for a few seconds: one it reaches
    /// again then could be sent one the log had moved past meanwhile.
    pub(super) fn purged_past(&self, index: u64) -> bool {
        self.purged.load(Ordering::Relaxed) > index + 1
    }

    /// This member's log is purged through `index` (told by the log as it purges, and by
    /// the Raft metrics for what was purged before this process).
    pub(super) fn purged_through(&self, index: u64) {
        self.purged.fetch_max(index + 1, Ordering::Relaxed);
        let mut sizes = self.sizes();
        *sizes = sizes.split_off(&(index + 1));
    }

    fn sizes(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        self.sizes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries of these sizes were appended at these indexes (one appended again after a
    /// truncation replaces the one that was there).
    pub(super) fn appended(&self, entries: impl IntoIterator<Item = (u64, u64)>) {
        self.sizes().extend(entries);
    }

    /// The log's entries from `index` on are gone.
    pub(super) fn truncated(&self, index: u64) {
        self.sizes().split_off(&index);
    }

    /// The log held the entries `first..=last` when this member started, in a file of
    /// `bytes`: each counts as an even share of it. Reading their sizes back would read the
    /// whole log; the file may be larger than they are (redb keeps the pages of purged
    /// entries for reuse), so they count for at least what they take.
    pub(super) fn held_at_start(&self, first: u64, last: u64, bytes: u64) {
        if first > last {
            return;
        }
        let each = bytes / (last - first + 1);
        self.appended((first..=last).map(|i| (i, each)));
    }

    /// The bytes of the log's entries after `index` (all of them with `None`).
    fn bytes_after(&self, index: Option<u64>) -> u64 {
        let sizes = self.sizes();
        match index {
            Some(i) => sizes.range(i + 1..).map(|(_, b)| b).sum(),
            None => sizes.values().sum(),
        }
    }

    /// Through which entry to purge the log so that the entries kept behind the snapshot
    /// at `snapshot` take at most `bytes`; `None` when they already do.
    pub(super) fn purge_to_keep(&self, snapshot: u64, bytes: u64) -> Option<u64> {
        let mut kept = 0u64;
        for (index, size) in self.sizes().range(..=snapshot).rev() {
            kept = kept.saturating_add(*size);
            if kept > bytes {
                return Some(*index);
            }
        }
        None
    }

    /// Whether `id` is catching up as far as this member can tell: it answered lately, or
    /// it is installing a snapshot.
    pub(super) fn catching_up(&self, id: NodeId, now: Instant) -> bool {
        self.installs().contains_key(&id)
            || self
                .answers()
                .get(&id)
                .is_some_and(|t| now.saturating_duration_since(*t) <= ANSWERED_WITHIN)
    }
}

/// A member installing a snapshot, while this is held (see [`Seen::installing`]).
pub(super) struct Installing {
    seen: Arc<Seen>,
    id: NodeId,
}

impl Drop for Installing {
    fn drop(&mut self) {
        let mut installs = self.seen.installs();
        if let Some(count) = installs.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                installs.remove(&self.id);
            }
        }
    }
}

/// A member this one replicates to, as the rule reads it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Follower {
    /// The last entry it holds, as the leader knows.
    pub matched: Option<u64>,
    pub catching_up: bool,
}

/// How much log is between two snapshots: so many entries, or entries of so many bytes,
/// whichever comes first.
#[derive(Debug, Clone, Copy)]
pub(super) struct Every {
    pub entries: u64,
    pub bytes: u64,
}

impl Every {
    /// Whether `entries` entries of `bytes` are `times` the log between two snapshots.
    fn reached(&self, entries: u64, bytes: u64, times: u64) -> bool {
        entries >= self.entries.saturating_mul(times) || bytes >= self.bytes.saturating_mul(times)
    }

    /// The log between snapshots by bytes when the tables take `tables` bytes: at least
    /// twice that. A snapshot copies every table; so the log is bounded by the state it
    /// leads to, and a member that missed it replays no more than about twice what a
    /// snapshot would send it (where writes only add, the log is about the size of the
    /// tables, and a snapshot would only make a restarted member receive the whole state).
    fn with_tables(self, tables: u64) -> Self {
        Self {
            bytes: self.bytes.max(tables.saturating_mul(2)),
            ..self
        }
    }
}

/// What [`keep`] snapshots by.
pub(super) struct Rule {
    pub every: Every,
    /// The entries kept behind a snapshot (openraft's count, see `timing`).
    pub keep: u64,
    /// The bytes the entries kept behind a snapshot take at most.
    pub keep_bytes: u64,
    /// The tables' file (see [`Every::with_tables`]).
    pub tables: std::path::PathBuf,
}

/// Whether to snapshot now, having applied up to `applied` with the last snapshot at
/// `snapshot`, the log since it taking `bytes`: every so many entries (as openraft's own
/// policy) or bytes, unless that would purge (all but `keep` entries behind the snapshot)
/// what a follower catching up, more than a few appends behind, still needs, until the log
/// since the snapshot is [`HELD_AT_MOST`] times `every`.
pub(super) fn due(
    applied: u64,
    snapshot: Option<u64>,
    bytes: u64,
    every: Every,
    keep: u64,
    followers: &[Follower],
) -> bool {
    let since = since(applied, snapshot);
    if !every.reached(since, bytes, 1) {
        return false;
    }
    if every.reached(since, bytes, HELD_AT_MOST) {
        return true;
    }
    let purged_to = applied.saturating_sub(keep);
    // One within a few appends of the leader is being sent the rest (openraft keeps entries
    // on their way), not catching up.
    let behind = |m: u64| m < purged_to && m + super::CAUGHT_UP_WITHIN_ENTRIES < applied;
    !followers.iter().any(|f| f.catching_up && f.matched.is_none_or(behind))
}

/// Whether the snapshot asked for when the last one was `asked` is still being built, the
/// last one being `snapshot` now.
fn building(asked: (Option<u64>, Instant), snapshot: Option<u64>, now: Instant) -> bool {
    let (last, when) = asked;
    last == snapshot && now.saturating_duration_since(when) < BUILT_WITHIN
}

/// The entries applied since the snapshot at `snapshot`, counted as openraft counts them
/// (from index 0 with none).
fn since(applied: u64, snapshot: Option<u64>) -> u64 {
    (applied + 1).saturating_sub(snapshot.map_or(0, |s| s + 1))
}

/// Snapshots this member's state by [`due`] for as long as its Raft runs, and purges the
/// log kept behind a snapshot down to its bytes ([`purge_upto`]).
pub(super) async fn keep(raft: Raft, rule: Rule, seen: Arc<Seen>) {
    let Rule {
        every,
        keep,
        keep_bytes,
        tables,
    } = rule;
    for event in ["built", "installed", "held"] {
        metrics::counter!(COUNTED, "event" => event).increment(0);
    }
    let mut metrics = raft.metrics();
    let mut held = false;
    // The last snapshot when one was asked for, and when: none is asked for again until
    // that one is built.
    let mut asked: Option<(Option<u64>, Instant)> = None;
    // The last entry a purge was asked through: openraft goes on with one it had to put off
    // (an entry on its way to a member) by itself.
    let mut purge_asked: Option<u64> = None;
    while metrics.changed().await.is_ok() {
        let (applied, snapshot, purged, followers) = {
            let m = metrics.borrow_and_update();
            let now = Instant::now();
            let followers: Vec<Follower> = match (&m.state, &m.replication) {
                (ServerState::Leader, Some(replication)) => replication
                    .iter()
                    .map(|(id, matched)| Follower {
                        matched: matched.map(|l| l.index),
                        catching_up: seen.catching_up(*id, now),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            if let Some(purged) = m.purged {
                seen.purged_through(purged.index);
            }
            (
                m.last_applied.map(|l| l.index),
                m.snapshot.map(|l| l.index),
                m.purged.map(|l| l.index),
                followers,
            )
        };
        let Some(applied) = applied else { continue };
        let purge = snapshot.and_then(|s| purge_upto(&seen, s, purged, keep_bytes, &followers));
        if let Some(upto) = purge.filter(|upto| purge_asked.is_none_or(|asked| *upto > asked)) {
            tracing::debug!(upto, "the log kept behind the snapshot is over its bytes: purged");
            purge_asked = Some(upto);
            if raft.trigger().purge_log(upto).await.is_err() {
                return;
            }
        }
        if asked.is_some_and(|asked| building(asked, snapshot, Instant::now())) {
            tokio::time::sleep(LOOKED_AT_EVERY).await;
            continue;
        }
        let since = since(applied, snapshot);
        let bytes = seen.bytes_after(snapshot);
        let every = every.with_tables(std::fs::metadata(&tables).map_or(0, |m| m.len()));
        match (
            due(applied, snapshot, bytes, every, keep, &followers),
            every.reached(since, bytes, 1),
        ) {
            (true, _) => {
                held = false;
                asked = Some((snapshot, Instant::now()));
                if raft.trigger().snapshot().await.is_err() {
                    return;
                }
            }
            (false, true) => {
                if !std::mem::replace(&mut held, true) {
                    metrics::counter!(COUNTED, "event" => "held").increment(1);
                    tracing::info!(
                        since,
                        bytes,
                        "a member catching up still needs the log a snapshot would purge: the snapshot waits"
                    );
                }
            }
            (false, false) => held = false,
        }
        tokio::time::sleep(LOOKED_AT_EVERY).await;
    }
}

/// Through which entry to purge the log behind the snapshot at `snapshot` (the log purged
/// through `purged`) so that what is kept behind it takes at most `keep_bytes`: openraft
/// keeps a number of entries, whatever their size. Never past an entry a follower catching
/// up still needs (one that answers nothing is sent a snapshot anyway); `None` when
/// nothing is to be purged.
fn purge_upto(seen: &Seen, snapshot: u64, purged: Option<u64>, keep_bytes: u64, followers: &[Follower]) -> Option<u64> {
    let upto = seen.purge_to_keep(snapshot, keep_bytes)?;
    // `None` sorts first: a follower catching up that holds nothing lets nothing go.
    let needed = followers.iter().filter(|f| f.catching_up).map(|f| f.matched).min();
    let upto = match needed {
        None => upto,
        Some(None) => return None,
        Some(Some(matched)) => upto.min(matched),
    };
    purged.is_none_or(|p| upto > p).then_some(upto)
}

#[cfg(test)]
mod tests {
    use super::{due, purge_upto, Every, Follower, Seen, HELD_AT_MOST};
    use std::time::Instant;

    /// Every 100 entries, of whatever bytes.
    const ENTRIES: Every = Every {
        entries: 100,
        bytes: u64::MAX,
    };

    const fn follower(matched: Option<u64>, catching_up: bool) -> Follower {
        Follower { matched, catching_up }
    }

    #[test]
    fn a_snapshot_is_due_every_so_many_entries_as_openraft_counts_them() {
        assert!(!due(98, None, 0, ENTRIES, 5, &[]));
        assert!(due(99, None, 0, ENTRIES, 5, &[]));
        assert!(!due(199, Some(100), 0, ENTRIES, 5, &[]));
        assert!(due(200, Some(100), 0, ENTRIES, 5, &[]));
    }

    #[test]
    fn a_follower_catching_up_that_would_lose_log_it_needs_holds_the_snapshot_back() {
        // It holds up to 150; a snapshot at 300 would purge up to 295.
        assert!(!due(300, Some(100), 0, ENTRIES, 5, &[follower(Some(150), true)]));
        assert!(!due(300, Some(100), 0, ENTRIES, 5, &[follower(None, true)]));
        // Within what a snapshot keeps behind it, it loses nothing.
        assert!(due(300, Some(100), 0, ENTRIES, 5, &[follower(Some(295), true)]));
        // Within a few appends of the leader it is being sent the rest, not catching up.
        assert!(!due(300, Some(100), 0, ENTRIES, 5, &[follower(Some(235), true)]));
        assert!(due(300, Some(100), 0, ENTRIES, 5, &[follower(Some(236), true)]));
        // A follower that answers nothing (down, cut off) holds nothing back.
        assert!(due(300, Some(100), 0, ENTRIES, 5, &[follower(Some(150), false)]));
        // Nor does anyone once the log since the snapshot is HELD_AT_MOST times the usual.
        let far = 100 + 100 * HELD_AT_MOST;
        assert!(!due(far - 1, Some(100), 0, ENTRIES, 5, &[follower(Some(150), true)]));
        assert!(due(far, Some(100), 0, ENTRIES, 5, &[follower(Some(150), true)]));
    }

    #[test]
    fn a_member_is_catching_up_while_it_answered_lately() {
        let seen = Seen::default();
        assert!(!seen.catching_up(7, Instant::now()));
        let before = Instant::now();
        seen.answered(7);
        let after = Instant::now();
        assert!(seen.catching_up(7, before + super::ANSWERED_WITHIN));
        assert!(!seen.catching_up(7, after + super::ANSWERED_WITHIN * 2));
        assert!(!seen.catching_up(8, after));
    }

    #[test]
    fn a_member_installing_a_snapshot_is_catching_up_however_long_it_answered_nothing() {
        let seen = std::sync::Arc::new(Seen::default());
        seen.answered(7);
        let later = Instant::now() + super::ANSWERED_WITHIN * 2;
        assert!(!seen.catching_up(7, later));
        let first = seen.installing(7);
        let again = seen.installing(7);
        assert!(seen.catching_up(7, later));
        assert!(!seen.catching_up(8, later));
        drop(first);
        assert!(seen.catching_up(7, later), "one send of the last chunk still waits");
        drop(again);
        assert!(!seen.catching_up(7, later));
    }

    #[test]
    fn a_snapshot_asked_for_is_not_asked_for_again_until_it_is_built() {
        use super::{building, BUILT_WITHIN};
        let asked = (Some(100), Instant::now());
        assert!(building(asked, Some(100), asked.1));
        // Built: the last snapshot moved (or one was installed).
        assert!(!building(asked, Some(300), asked.1));
        assert!(!building((None, asked.1), Some(300), asked.1));
        // Asked for again if nothing came of it for that long.
        assert!(!building(asked, Some(100), asked.1 + BUILT_WITHIN));
    }

    #[test]
    fn a_snapshot_is_stale_once_the_log_after_it_is_purged() {
        let seen = Seen::default();
        assert!(!seen.purged_past(0));
        seen.purged_through(40);
        seen.purged_through(12);
        // Purged through 40: a snapshot at 40 is followed by 41, which is kept; one at 39
        // would be followed by 40, which is gone.
        assert!(!seen.purged_past(40));
        assert!(!seen.purged_past(41));
        assert!(seen.purged_past(39));
    }

    #[test]
    fn a_snapshot_is_due_once_the_log_since_the_last_takes_so_many_bytes_however_few_its_entries() {
        let every = Every {
            entries: 20_000,
            bytes: 1_000,
        };
        assert!(!due(300, Some(100), 999, every, 5, &[]));
        assert!(due(300, Some(100), 1_000, every, 5, &[]));
        // A follower catching up holds it back, up to HELD_AT_MOST times the bytes.
        let behind = [follower(Some(120), true)];
        assert!(!due(300, Some(100), 1_000, every, 5, &behind));
        assert!(!due(300, Some(100), 1_000 * HELD_AT_MOST - 1, every, 5, &behind));
        assert!(due(300, Some(100), 1_000 * HELD_AT_MOST, every, 5, &behind));
    }

    #[test]
    fn the_log_between_snapshots_may_take_twice_the_tables() {
        let every = Every {
            entries: 20_000,
            bytes: 1_000,
        };
        assert_eq!(every.with_tables(300).bytes, 1_000, "small tables: the bound as set");
        assert_eq!(every.with_tables(800).bytes, 1_600);
        assert!(!due(300, Some(100), 1_599, every.with_tables(800), 5, &[]));
        assert!(due(300, Some(100), 1_600, every.with_tables(800), 5, &[]));
        assert_eq!(every.with_tables(u64::MAX).bytes, u64::MAX);
    }

    #[test]
    fn the_log_kept_behind_a_snapshot_is_purged_down_to_its_bytes_but_never_what_a_member_catching_up_needs() {
        let seen = Seen::default();
        // Entries 1..=10 of 100 bytes, the snapshot at 8.
        seen.appended((1..=10).map(|i| (i, 100)));
        assert_eq!(seen.bytes_after(Some(8)), 200);
        assert_eq!(seen.bytes_after(None), 1_000);
        // 250 bytes kept behind 8: entries 7 and 8; 6 and before go.
        assert_eq!(seen.purge_to_keep(8, 250), Some(6));
        assert_eq!(seen.purge_to_keep(8, 800), None, "all eight fit");
        assert_eq!(purge_upto(&seen, 8, None, 250, &[]), Some(6));
        assert_eq!(purge_upto(&seen, 8, Some(6), 250, &[]), None, "purged already");
        // A follower catching up that holds up to 4 needs 5 on.
        assert_eq!(purge_upto(&seen, 8, None, 250, &[follower(Some(4), true)]), Some(4));
        assert_eq!(purge_upto(&seen, 8, None, 250, &[follower(None, true)]), None);
        // One that answers nothing is sent a snapshot: it holds nothing back.
        assert_eq!(purge_upto(&seen, 8, None, 250, &[follower(Some(2), false)]), Some(6));
        // The log follows its purges and truncations; an entry appended again replaces the old.
        seen.purged_through(6);
        assert_eq!(seen.bytes_after(None), 400);
        seen.truncated(9);
        seen.appended([(9, 5)]);
        assert_eq!(seen.bytes_after(Some(8)), 5);
        // What the log held at start counts as an even share of its file.
        let started = Seen::default();
        started.held_at_start(11, 20, 1_000);
        assert_eq!(started.bytes_after(Some(15)), 500);
        started.held_at_start(1, 0, 1_000);
        assert_eq!(started.bytes_after(None), 1_000, "an empty log holds nothing");
    }
}

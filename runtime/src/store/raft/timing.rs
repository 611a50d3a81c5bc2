//! How this member's Raft paces itself: the timing a node is started with ([`Timing`]), and
//! the bounds Troupe sets on openraft (entries per append, snapshots and what stays behind
//! them, chunks), each with why it is not openraft's default.

use std::time::Duration;

use openraft::{Config, SnapshotPolicy};

use crate::store::StoreError;

/// The Raft timing, tuned for slow shared disks: an fsync of a few milliseconds must never
/// look like a dead leader (openraft's own 150–300 ms election window is too tight there).
/// A follower stands for election only after the leader's lease (openraft 0.9 makes it the
/// longest election timeout) and then its own timeout: 0.7–1 s gives a new leader
/// 1.7–2 s after the last heartbeat of a lost one (1–2 s gave 3–4 s).
#[derive(Debug, Clone)]
pub struct Timing {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// How long the writer holds records nobody waits for, for a write somebody waits for
    /// whose entry they then share (see `writer::flight`): 1 ms. Tests lengthen it to
    /// make the sharing certain rather than a race with the scheduler.
    pub hold_unawaited: Duration,
    /// Log entries between two snapshots; a twentieth of them (at least 64, at most 1,000) stay
    /// behind each, for a follower only a little behind.
    pub snapshot_every: u64,
    /// Bytes of log entries between two snapshots (or twice the tables' file, if that is
    /// more), if they come before `snapshot_every` entries; the entries kept behind each
    /// take at most a twentieth of it.
    pub snapshot_every_bytes: u64,
    /// How long a forwarded write waits with nothing moving: no answer from the leader and
    /// no entry applied here ([`FORWARD_WITHIN`](super::FORWARD_WITHIN)). Tests shorten it.
    pub forward_within: Duration,
    /// How long the leader may hold an append that only moves the commit index for a member
    /// that waits for none of it, for the next append to carry it instead (see
    /// `network::hold`): 5 ms. Zero sends each at once, as openraft does.
    pub commit_hold: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(700),
            election_max: Duration::from_millis(1000),
            hold_unawaited: Duration::from_millis(1),
            snapshot_every: SNAPSHOT_EVERY,
            snapshot_every_bytes: SNAPSHOT_EVERY_BYTES,
            forward_within: super::FORWARD_WITHIN,
            commit_hold: Duration::from_millis(5),
        }
    }
}

/// Entries between snapshots unless configured (`raft_snapshot_every`). A snapshot copies
/// every table, so it is taken rarely; the log keeps this many entries (each a whole group
/// commit) between them.
pub(super) const SNAPSHOT_EVERY: u64 = 20_000;
/// Bytes of log between snapshots unless configured (`raft_snapshot_every_mb`): 1 GiB, or
/// twice the tables' file if that is more (`snapshots::Every::with_tables`). An entry may
/// take up to 4 MiB, so entries alone would let 20,000 of them take 80 GB of disk before
/// the first snapshot.
pub const SNAPSHOT_EVERY_BYTES: u64 = 1 << 30;
/// At most this many entries are kept behind a snapshot, for a follower that is only a
/// little behind.
pub(super) const KEEP_BEHIND_SNAPSHOT: u64 = 1_000;
/// Entries in one AppendEntries request. openraft 0.9 gives each request one heartbeat
/// interval (100 ms) to be answered, and each entry is a whole group commit (tens of KiB
/// under load): with openraft's 300, a follower that fell behind under load was sent
/// requests of megabytes it could not take in 100 ms, timed out on every try and never
/// caught up, so a new leader whose other survivor lagged could commit nothing (found
/// killing the leader right after the `replicated` bench's load). 16 keeps a request small.
pub(super) const MAX_PAYLOAD_ENTRIES: u64 = 16;
/// How close to the leader's last entry a member being admitted must hold the log before it
/// counts (a voter): four appends. openraft's 5,000 counted a member that held nothing as
/// caught up while the log had fewer entries than that (a log of 26 MB in about 3,000
/// groups): it became a voter at once, and a cluster whose appends to it timed out on a
/// busy machine had a voter that never came up.
pub(super) const CAUGHT_UP_WITHIN_ENTRIES: u64 = 4 * MAX_PAYLOAD_ENTRIES;
/// Snapshot chunks stay well under ractor_cluster's 16 MiB frames.
pub(super) const SNAPSHOT_CHUNK: u64 = 1 << 20;
/// A chunk may take seconds on a busy link (openraft's 200 ms default loops for ever there).
/// The last one is answered once the member has installed the whole snapshot: it gets
/// longer (see [`super::network::chunk_within`]), and openraft's own bound on every chunk is the
/// longest that takes ([`SNAPSHOT_INSTALL_AT_MOST`]).
pub(crate) const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest the last chunk of a snapshot may take: its install.
pub(crate) const SNAPSHOT_INSTALL_AT_MOST: Duration = Duration::from_secs(30 * 60);

/// The entries kept behind each snapshot, for a follower only a little behind: a twentieth
/// of those between snapshots, and never fewer than [`CAUGHT_UP_WITHIN_ENTRIES`]. openraft
/// purges behind a snapshot all but the entries on their way to a follower; a follower a
/// few appends behind had the entries not yet sent to it purged (with a snapshot every 40
/// entries, two were kept: a member 49 entries behind, with 16 on their way, lost the
/// other 31), and was sent a snapshot it would not have needed. The snapshot rule counts a
/// member within that many entries as being sent the rest (`snapshots::due`), which holds
/// only if they are kept.
pub(super) fn keep_behind_snapshot(timing: &Timing) -> u64 {
    (timing.snapshot_every / 20).clamp(CAUGHT_UP_WITHIN_ENTRIES, KEEP_BEHIND_SNAPSHOT)
}

/// The bytes the entries kept behind a snapshot take at most (a twentieth of those between
/// snapshots, as with entries): `snapshots::keep` purges the oldest of them beyond it,
/// never one a member catching up still needs.
pub(super) fn keep_bytes_behind_snapshot(timing: &Timing) -> u64 {
    timing.snapshot_every_bytes / 20
}

/// How much log is between two snapshots by `timing`.
pub(super) fn every(timing: &Timing) -> super::snapshots::Every {
    super::snapshots::Every {
        entries: timing.snapshot_every,
        bytes: timing.snapshot_every_bytes,
    }
}

/// openraft's configuration for `timing`.
pub(super) fn config(timing: &Timing) -> Result<Config, StoreError> {
    let millis = |d: Duration| d.as_millis() as u64;
    Config {
        cluster_name: "troupe".into(),
        heartbeat_interval: millis(timing.heartbeat),
        election_timeout_min: millis(timing.election_min),
        election_timeout_max: millis(timing.election_max),
        install_snapshot_timeout: millis(SNAPSHOT_INSTALL_AT_MOST),
        // Taken by `snapshots::keep`, which holds one back for a member catching up.
        snapshot_policy: SnapshotPolicy::Never,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        replication_lag_threshold: CAUGHT_UP_WITHIN_ENTRIES,
        max_in_snapshot_log_to_keep: keep_behind_snapshot(timing),
        // Troupe's own timer stands, after a pre-vote (see `prevote`).
        enable_elect: false,
        ..Config::default()
    }
    .validate()
    .map_err(|e| StoreError::Database(format!("raft configuration: {e}")))
}

//! The cuts a node's calls to its peers check: a test node's partition gates and the faults
//! a fault experiment armed (once per process; a node is one process).

/// The partition gates of this process's node: a test node (built with the store's
/// `fault-injection` feature) sends nothing to a peer while its `partition-<peer>` gate is
/// set, its beats, Raft messages and service calls alike (set on both sides, the cut is
/// both ways).
static PARTITION: std::sync::OnceLock<troupe_runtime::store::NamedGates> = std::sync::OnceLock::new();

/// Sets the partition gates (once per process; a node is one process).
pub fn set_partition_gates(gates: Option<troupe_runtime::store::NamedGates>) {
    if let Some(gates) = gates {
        let _ = PARTITION.set(gates);
    }
}

/// The faults a fault experiment armed in this node's memory, among them cuts to peers
/// (a node started with `--fault-injection`; see `service::experiments`).
static ARMED: std::sync::OnceLock<troupe_runtime::store::ArmedFaults> = std::sync::OnceLock::new();

/// Sets the armed faults the calls to peers check (once per process).
pub fn set_armed_faults(armed: troupe_runtime::store::ArmedFaults) {
    let _ = ARMED.set(armed);
}

/// Whether a partition gate or an armed fault cuts this node off from `node`.
pub(crate) fn cut_off(node: &str) -> bool {
    PARTITION.get().is_some_and(|g| g.is_set(&format!("partition-{node}")))
        || ARMED.get().is_some_and(|a| a.cut_off(node))
}

/// Whether this node's Raft messages to `node` are cut: by a partition ([`cut_off`]), or by
/// a test node's `raft-partition-<peer>` gate, which cuts the log alone (beats and service
/// calls go on, so a member falls behind the log while it keeps its lease).
pub(crate) fn raft_cut_off(node: &str) -> bool {
    cut_off(node)
        || PARTITION
            .get()
            .is_some_and(|g| g.is_set(&format!("raft-partition-{node}")))
}

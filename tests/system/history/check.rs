//! The checks of a recorded history: each swarm memory key's compare-and-set operations are
//! linearizable, and every acknowledged task exists once and succeeded once.
//!
//! A key is a versioned register: a set that succeeds turns version `e` into `e + 1`, and a
//! refusal (CONFLICT) reports the version it saw. The versions the log committed, read from
//! the `SWARM_MEMORY_SET` events once the run is over, fix the order of the writes, so a
//! linearization exists exactly when each version `k` can be given a moment `p_k`, with
//! `p_1 <= p_2 <= …`, that lies within the operation that wrote it (any moment after its
//! start for an operation whose answer was lost), and each refusal that saw version `x` lies
//! somewhere between `p_x` and `p_(x+1)` within its own interval. Operations whose answer was
//! lost (a timeout, UNAVAILABLE, a node killed under it) may or may not have happened.

use std::collections::BTreeMap;

/// What a compare-and-set answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written: the version it made.
    Written(u64),
    /// Refused: the version the key was at.
    Refused(u64),
    /// No answer that says: it may or may not have happened.
    Unknown,
}

/// One compare-and-set of a key: `expect` the version it asked for, `value` unique to it,
/// `start` and `end` when it was sent and answered (any clock common to every operation).
#[derive(Debug, Clone)]
pub struct Cas {
    pub key: String,
    pub expect: u64,
    pub value: String,
    pub start: u64,
    pub end: u64,
    pub outcome: Outcome,
}

/// What the cluster holds of a key once the run is over: the versions its log committed (in
/// log order) and the value it holds now (`None` when it was never set).
#[derive(Debug, Clone, Default)]
pub struct Committed {
    pub versions: Vec<u64>,
    pub value: Option<String>,
}

/// Every way the history of one key breaks linearizability; empty when it holds.
pub fn key(name: &str, ops: &[&Cas], committed: &Committed) -> Vec<String> {
    let mut found = Vec::new();
    let top = committed.versions.len() as u64;
    // The log holds each version once, in order: no lost update wrote one twice.
    for (i, v) in committed.versions.iter().enumerate() {
        if *v != i as u64 + 1 {
            found.push(format!(
                "key {name}: the log's versions are {:?}, not 1..={top} once each",
                committed.versions
            ));
            return found;
        }
    }
    // Who wrote each version: the acknowledged write of it, or else some write whose answer
    // was lost that asked for the version before it.
    let mut writer: BTreeMap<u64, &Cas> = BTreeMap::new();
    for op in ops.iter().filter(|o| matches!(o.outcome, Outcome::Written(_))) {
        let Outcome::Written(v) = op.outcome else {
            unreachable!()
        };
        if v != op.expect + 1 {
            found.push(format!("key {name}: {op:?} expected {} and made {v}", op.expect));
        }
        if v > top {
            found.push(format!("key {name}: {op:?} was acknowledged but the log ends at {top}"));
        }
        if let Some(other) = writer.insert(v, op) {
            found.push(format!(
                "key {name}: version {v} acknowledged twice: {other:?} and {op:?}"
            ));
        }
    }
    // The bounds on each version's moment: [lower, upper].
    let mut lower = vec![0u64; top as usize + 2];
    let mut upper = vec![u64::MAX; top as usize + 2];
    for k in 1..=top {
        match writer.get(&k) {
            Some(op) => {
                lower[k as usize] = op.start;
                upper[k as usize] = op.end;
            }
            None => {
                let maybe = ops
                    .iter()
                    .filter(|o| o.outcome == Outcome::Unknown && o.expect + 1 == k)
                    .map(|o| o.start)
                    .min();
                match maybe {
                    Some(start) => lower[k as usize] = start,
                    None => found.push(format!(
                        "key {name}: version {k} is in the log but no operation could have written it"
                    )),
                }
            }
        }
    }
    for op in ops {
        let Outcome::Refused(seen) = op.outcome else { continue };
        if seen == op.expect {
            found.push(format!("key {name}: {op:?} was refused at the version it asked for"));
        }
        if seen > top {
            found.push(format!("key {name}: {op:?} saw a version the log never held"));
            continue;
        }
        // Version `seen` was made before the refusal ended, and the next one after it began.
        if seen >= 1 {
            upper[seen as usize] = upper[seen as usize].min(op.end);
        }
        if seen < top {
            lower[seen as usize + 1] = lower[seen as usize + 1].max(op.start);
        }
    }
    // Feasible exactly when no version must come after a later version's latest moment.
    let mut latest = vec![u64::MAX; top as usize + 2];
    for k in (1..=top as usize).rev() {
        latest[k] = upper[k].min(latest[k + 1]);
    }
    let mut earliest = 0;
    for k in 1..=top as usize {
        earliest = earliest.max(lower[k]);
        if earliest > latest[k] {
            found.push(format!(
                "key {name}: not linearizable at version {k}: it cannot be placed after {earliest} \
                 and by {} (operations: {:?})",
                latest[k],
                ops.iter()
                    .filter(|o| {
                        matches!(o.outcome, Outcome::Written(v) | Outcome::Refused(v) if v.abs_diff(k as u64) <= 1)
                    })
                    .collect::<Vec<_>>()
            ));
            break;
        }
    }
    // The value the key holds is the last version's.
    if top > 0 {
        let last = &committed.value;
        let ok = match writer.get(&top) {
            Some(op) => last.as_deref() == Some(op.value.as_str()),
            None => ops.iter().any(|o| {
                o.outcome == Outcome::Unknown && o.expect + 1 == top && last.as_deref() == Some(o.value.as_str())
            }),
        };
        if !ok {
            found.push(format!(
                "key {name}: holds {last:?}, which no write of version {top} set"
            ));
        }
    }
    found
}

/// Every key's findings.
pub fn keys(ops: &[Cas], committed: &BTreeMap<String, Committed>) -> Vec<String> {
    let mut found = Vec::new();
    for (name, held) in committed {
        let mine: Vec<&Cas> = ops.iter().filter(|o| &o.key == name).collect();
        found.extend(key(name, &mine, held));
    }
    found
}

/// The acknowledged submissions (idempotency key → the task ids answered for it), the tasks
/// the cluster holds (task id → idempotency key, state) and how many TASK_SUCCEEDED events
/// each task has: every acknowledged key has one task, that task succeeded once, and no key
/// has two tasks.
pub fn tasks(
    acked: &BTreeMap<String, Vec<String>>,
    held: &BTreeMap<String, (String, String)>,
    successes: &BTreeMap<String, usize>,
) -> Vec<String> {
    let mut found = Vec::new();
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, (key, _)) in held {
        by_key.entry(key).or_default().push(id);
    }
    for (key, ids) in &by_key {
        if ids.len() > 1 {
            found.push(format!("idempotency key {key} made {} tasks: {ids:?}", ids.len()));
        }
    }
    for (key, answered) in acked {
        let mut distinct = answered.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() > 1 {
            found.push(format!(
                "idempotency key {key} was answered with different tasks: {answered:?}"
            ));
        }
        let id = &answered[0];
        match held.get(id) {
            None => found.push(format!("task {id} (key {key}) was acknowledged and is gone")),
            Some((_, state)) if state != "SUCCEEDED" => {
                found.push(format!("task {id} (key {key}) was acknowledged and is {state}"))
            }
            Some(_) => {}
        }
        let n = successes.get(id).copied().unwrap_or(0);
        if n != 1 {
            found.push(format!("task {id} (key {key}) succeeded {n} times"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(expect: u64, value: &str, start: u64, end: u64, outcome: Outcome) -> Cas {
        Cas {
            key: "k".into(),
            expect,
            value: value.into(),
            start,
            end,
            outcome,
        }
    }

    fn held(top: u64, value: &str) -> Committed {
        Committed {
            versions: (1..=top).collect(),
            value: Some(value.into()),
        }
    }

    fn check(ops: &[Cas], committed: &Committed) -> Vec<String> {
        let refs: Vec<&Cas> = ops.iter().collect();
        key("k", &refs, committed)
    }

    #[test]
    fn a_history_of_sets_refusals_and_lost_answers_in_order_is_linearizable() {
        let ops = [
            op(0, "a", 0, 10, Outcome::Written(1)),
            op(0, "x", 5, 12, Outcome::Refused(1)),
            op(1, "b", 11, 30, Outcome::Unknown),
            op(1, "y", 31, 35, Outcome::Refused(2)),
            op(2, "c", 36, 40, Outcome::Written(3)),
            op(3, "d", 41, 45, Outcome::Unknown),
        ];
        assert_eq!(check(&ops, &held(3, "c")), Vec::<String>::new());
    }

    #[test]
    fn a_version_acknowledged_twice_is_a_lost_update() {
        let ops = [
            op(0, "a", 0, 10, Outcome::Written(1)),
            op(0, "b", 20, 30, Outcome::Written(1)),
        ];
        let found = check(
            &ops,
            &Committed {
                versions: vec![1, 1],
                value: Some("b".into()),
            },
        );
        assert!(found.iter().any(|f| f.contains("not 1..=2 once each")), "{found:?}");
        let found = check(&ops, &held(1, "b"));
        assert!(found.iter().any(|f| f.contains("acknowledged twice")), "{found:?}");
    }

    #[test]
    fn a_refusal_that_saw_a_version_already_replaced_before_it_began_is_stale() {
        let ops = [
            op(0, "a", 0, 10, Outcome::Written(1)),
            op(1, "b", 11, 20, Outcome::Written(2)),
            op(2, "x", 25, 30, Outcome::Refused(1)),
        ];
        let found = check(&ops, &held(2, "b"));
        assert!(found.iter().any(|f| f.contains("not linearizable")), "{found:?}");
    }

    #[test]
    fn a_write_seen_before_it_began_or_ordered_against_real_time_is_caught() {
        // Version 2 acknowledged before version 1's write even began.
        let ops = [
            op(1, "b", 0, 5, Outcome::Written(2)),
            op(0, "a", 10, 20, Outcome::Written(1)),
        ];
        let found = check(&ops, &held(2, "b"));
        assert!(found.iter().any(|f| f.contains("not linearizable")), "{found:?}");
    }

    #[test]
    fn a_committed_version_no_operation_asked_for_or_a_wrong_final_value_is_caught() {
        let ops = [op(0, "a", 0, 10, Outcome::Written(1))];
        let found = check(&ops, &held(2, "a"));
        assert!(
            found.iter().any(|f| f.contains("no operation could have written")),
            "{found:?}"
        );
        let found = check(&ops, &held(1, "z"));
        assert!(
            found.iter().any(|f| f.contains("which no write of version 1 set")),
            "{found:?}"
        );
        let found = check(&ops, &held(0, ""));
        assert!(found.iter().any(|f| f.contains("log ends at 0")), "{found:?}");
    }

    #[test]
    fn an_acknowledged_task_lost_run_twice_or_made_twice_is_caught() {
        let acked = BTreeMap::from([
            ("k1".to_string(), vec!["t1".to_string()]),
            ("k2".to_string(), vec!["t2".to_string()]),
            ("k3".to_string(), vec!["t3".to_string(), "t4".to_string()]),
        ]);
        let held = BTreeMap::from([
            ("t1".to_string(), ("k1".to_string(), "SUCCEEDED".to_string())),
            ("t3".to_string(), ("k3".to_string(), "SUCCEEDED".to_string())),
            ("t4".to_string(), ("k3".to_string(), "QUEUED".to_string())),
        ]);
        let successes = BTreeMap::from([("t1".to_string(), 2), ("t3".to_string(), 1)]);
        let found = tasks(&acked, &held, &successes);
        assert!(
            found.iter().any(|f| f.contains("t1") && f.contains("2 times")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|f| f.contains("t2") && f.contains("is gone")),
            "{found:?}"
        );
        assert!(found.iter().any(|f| f.contains("k3 made 2 tasks")), "{found:?}");
        assert!(found.iter().any(|f| f.contains("different tasks")), "{found:?}");
        let fine = BTreeMap::from([("t1".to_string(), 1), ("t3".to_string(), 1)]);
        let acked = BTreeMap::from([("k1".to_string(), vec!["t1".to_string(), "t1".to_string()])]);
        let held = BTreeMap::from([("t1".to_string(), ("k1".to_string(), "SUCCEEDED".to_string()))]);
        assert_eq!(tasks(&acked, &held, &fine), Vec::<String>::new());
    }
}

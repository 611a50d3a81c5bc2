//! Each agent's recent history: its last [`HISTORY`] messages, answered or dead.
//!
//! The node that delivers them notes each line in memory as it happens, and writes the lines
//! to the replicated `message_history` table in the background: at most every
//! [`WRITE_EVERY`], [`AGENTS_AT_ONCE`] agents a write, each agent's newest [`HISTORY`] lines of
//! that time (and the deletes of those they push out). A delivery's own write stays one
//! record (the line in the same write halved the message round trips; written in the
//! background they cost about a fifth at 40k a second: BENCHMARKS.md), any node reads any
//! agent's history from its replica (the holder adds what it has not written yet), and a
//! history survives restarts and follows its agent when it moves. What a node delivered in
//! its last moments before it died ([`WRITE_EVERY`] at most) is missing from the history; the
//! messages themselves are not lost (they are answered or dead-lettered as before).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use troupe_runtime::store::{Batch, Op, Store, StoreError, View};

use super::{Mailboxes, Sent};
use crate::tables::{AGENTS, MAILBOX, MESSAGE_HISTORY};

/// Messages of each agent kept in its history.
pub(super) const HISTORY: usize = 50;
/// How often a node writes the lines noted since its last write.
pub const WRITE_EVERY: Duration = Duration::from_millis(250);
/// The agents whose lines are read and written together.
const AGENTS_AT_ONCE: usize = 32;
/// The most bytes of lines in one write (a log entry may take 8 MiB).
const WRITE_BYTES: usize = 1 << 20;
/// The longest wait between two tries while writes fail (no quorum, a store refusing
/// writes): from [`WRITE_EVERY`], doubled after each failure.
const RETRY_AT_MOST: Duration = Duration::from_secs(8);

/// How the writer goes on after failed writes: each try waits twice as long as the one
/// before, up to [`RETRY_AT_MOST`], and the log says the first failure, each new error and
/// the recovery, not every try (while a cluster has no quorum, a line every 250 ms said
/// nothing new).
#[derive(Debug, Default)]
struct Tries {
    failed: u32,
    last_error: Option<String>,
}

/// What to do after a try.
#[derive(Debug, PartialEq)]
struct Next {
    /// Wait this long after the try began.
    after: Duration,
    /// Say this failure (the first, or an error other than the last one's).
    warn: bool,
}

impl Tries {
    fn failed(&mut self, error: String) -> Next {
        self.failed += 1;
        let warn = self.last_error.as_deref() != Some(error.as_str());
        self.last_error = Some(error);
        let after = WRITE_EVERY
            .saturating_mul(1 << (self.failed - 1).min(8))
            .min(RETRY_AT_MOST);
        Next { after, warn }
    }

    /// How many tries had failed before this one succeeded.
    fn succeeded(&mut self) -> u32 {
        self.last_error = None;
        std::mem::take(&mut self.failed)
    }
}

/// An agent's last lines as its node noted them, and how many of the newest are not written.
#[derive(Default)]
pub(super) struct Recent {
    lines: VecDeque<Sent>,
    unwritten: usize,
}

impl Recent {
    pub fn note(&mut self, sent: Sent) {
        self.lines.push_back(sent);
        if self.lines.len() > HISTORY {
            self.lines.pop_front();
        }
        self.unwritten = (self.unwritten + 1).min(self.lines.len());
    }

    pub fn lines(&self) -> impl Iterator<Item = &Sent> {
        self.lines.iter()
    }

    /// The lines not written yet, oldest first; they count as written from now on.
    fn take_unwritten(&mut self) -> Vec<Sent> {
        let n = std::mem::take(&mut self.unwritten);
        self.lines.iter().skip(self.lines.len() - n).cloned().collect()
    }

    /// `n` lines taken by a write that failed are to be written again.
    fn unwritten_again(&mut self, n: usize) {
        self.unwritten = (self.unwritten + n).min(self.lines.len());
    }
}

/// Where a line of `agent`'s history is kept: in the order of its time.
fn history_key(agent: &str, sent: &Sent) -> String {
    format!("{agent}/{:020}/{}", sent.at.timestamp_micros().max(0), sent.id)
}

/// The keys of `agent`'s records in `table` (`<agent>/…`), in key order.
fn keys_of(v: &View<'_>, table: troupe_runtime::store::Table, agent: &str) -> Result<Vec<String>, StoreError> {
    let prefix = format!("{agent}/");
    let mut keys = Vec::new();
    v.scan_prefix(table, &prefix, |k, _| {
        keys.push(k.to_owned());
        Ok(true)
    })?;
    Ok(keys)
}

/// How many of `agent`'s messages the replica holds not answered yet: those queued and the
/// one it is handling.
pub fn waiting_in(v: &View<'_>, agent: &str) -> Result<usize, StoreError> {
    Ok(keys_of(v, MAILBOX, agent)?.len())
}

/// `agent`'s history as the replica holds it (as written), oldest first.
pub fn history_in(v: &View<'_>, agent: &str) -> Result<Vec<Sent>, StoreError> {
    let prefix = format!("{agent}/");
    let mut history = Vec::new();
    v.scan_prefix(MESSAGE_HISTORY, &prefix, |_, bytes| {
        history.push(troupe_runtime::codec::decode(bytes)?);
        Ok(true)
    })?;
    Ok(history)
}

/// The newest [`HISTORY`] of `written` and `noted` (a line in both counted once), oldest
/// first.
pub fn merged(written: Vec<Sent>, noted: Vec<Sent>) -> Vec<Sent> {
    let mut all = written;
    let seen: HashSet<String> = all.iter().map(|s| s.id.clone()).collect();
    all.extend(noted.into_iter().filter(|s| !seen.contains(&s.id)));
    all.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    let cut = all.len().saturating_sub(HISTORY);
    all.drain(..cut);
    all
}

/// Deletes `agent`'s history into `batch` (the agent is being removed).
pub async fn delete_history(store: &Store, agent: &str, batch: &mut Batch) -> Result<(), StoreError> {
    let agent = agent.to_owned();
    for key in store.view(move |v| keys_of(v, MESSAGE_HISTORY, &agent)).await? {
        batch.push(Op::Delete {
            table: MESSAGE_HISTORY,
            key,
        });
    }
    Ok(())
}

/// The writes that add `noted` (each agent's lines not written yet, oldest first) to the
/// histories `v` holds, keeping each agent's newest [`HISTORY`]: the puts of the new lines and
/// the deletes of the lines they push out, at most [`WRITE_BYTES`] of them a write. The lines
/// of an agent that is gone are dropped.
fn writes(v: &View<'_>, noted: &[(String, Vec<Sent>)]) -> Result<Vec<Batch>, StoreError> {
    let mut writes = vec![Batch::new()];
    for (agent, lines) in noted {
        if v.get(AGENTS, agent)?.is_none() {
            continue;
        }
        let kept = keys_of(v, MESSAGE_HISTORY, agent)?;
        let new: Vec<(String, &Sent)> = lines.iter().map(|s| (history_key(agent, s), s)).collect();
        let mut all: Vec<&str> = kept
            .iter()
            .chain(new.iter().map(|(k, _)| k))
            .map(String::as_str)
            .collect();
        all.sort_unstable();
        all.dedup();
        let gone: HashSet<&str> = all[..all.len().saturating_sub(HISTORY)].iter().copied().collect();
        let kept_set: HashSet<&str> = kept.iter().map(String::as_str).collect();
        let mut batch = writes.pop().unwrap_or_else(Batch::new);
        for key in kept.iter().filter(|k| gone.contains(k.as_str())) {
            batch = batch.delete(MESSAGE_HISTORY, key.clone());
        }
        for (key, sent) in &new {
            if !gone.contains(key.as_str()) && !kept_set.contains(key.as_str()) {
                batch = batch.put(MESSAGE_HISTORY, key.clone(), troupe_runtime::codec::encode(sent)?);
            }
        }
        let full = batch.wire_bytes() >= WRITE_BYTES;
        writes.push(batch);
        if full {
            writes.push(Batch::new());
        }
    }
    writes.retain(|b| !b.is_empty());
    Ok(writes)
}

impl Mailboxes {
    /// Writes the history lines this node's deliveries note, at most every [`WRITE_EVERY`],
    /// for the node's life (a chore of the node).
    pub async fn write_history(self) {
        let mut tries = Tries::default();
        loop {
            self.history_due().notified().await;
            let began = tokio::time::Instant::now();
            let after = match self.write_noted().await {
                Ok(()) => {
                    let failed = tries.succeeded();
                    if failed > 0 {
                        tracing::info!(failed_tries = failed, "the agents' message history is written again");
                    }
                    WRITE_EVERY
                }
                Err(e) => {
                    let next = tries.failed(e.to_string());
                    if next.warn {
                        tracing::warn!(error = %e, retry_in_ms = next.after.as_millis() as u64,
                            "could not write the agents' message history; trying again, less often while it fails");
                    } else {
                        tracing::debug!(error = %e, retry_in_ms = next.after.as_millis() as u64,
                            "the agents' message history is still not written");
                    }
                    next.after
                }
            };
            tokio::time::sleep_until(began + after).await;
        }
    }

    /// Writes each agent's lines noted since the last write (the background writer's work, and
    /// the node's last at its stop); a write that fails leaves them to the next one.
    pub async fn write_noted(&self) -> Result<(), StoreError> {
        let noted: Vec<(String, Vec<Sent>)> = self
            .lock()
            .iter_mut()
            .filter_map(|(agent, m)| {
                let lines = m.history.take_unwritten();
                (!lines.is_empty()).then(|| (agent.clone(), lines))
            })
            .collect();
        if noted.is_empty() {
            return Ok(());
        }
        // A few agents at a time, each read and write on its own: one read and write of
        // every agent's lines at once held the deliveries' writes behind it (the longest
        // message round trips 40-55 ms against 11-15 ms, `cargo bench --bench messages`).
        let mut result = Ok(());
        let mut left: &[(String, Vec<Sent>)] = &[];
        for (i, some) in noted.chunks(AGENTS_AT_ONCE).enumerate() {
            if let Err(e) = self.write_lines(some.to_vec()).await {
                result = Err(e);
                left = &noted[i * AGENTS_AT_ONCE..];
                break;
            }
        }
        if !left.is_empty() {
            let mut boxes = self.lock();
            for (agent, lines) in left {
                if let Some(m) = boxes.get_mut(agent) {
                    m.history.unwritten_again(lines.len());
                }
            }
            drop(boxes);
            self.history_due().notify_one();
        }
        result
    }

    async fn write_lines(&self, noted: Vec<(String, Vec<Sent>)>) -> Result<(), StoreError> {
        let store = self.store();
        for batch in store.view(move |v| writes(v, &noted)).await? {
            store.write(batch).await?;
        }
        Ok(())
    }

    /// Notes a line of `agent`'s history, for the next write.
    pub(super) fn note(&self, agent: &str, sent: Sent) {
        if let Some(m) = self.lock().get_mut(agent) {
            m.history.note(sent);
            self.history_due().notify_one();
        }
    }

    /// The lines of `agent`'s history this node noted (written or not), oldest first.
    pub fn noted(&self, agent: &str) -> Vec<Sent> {
        self.lock()
            .get(agent)
            .map(|m| m.history.lines().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Priority;

    fn sent(n: i64) -> Sent {
        Sent {
            id: format!("m{n:03}"),
            from: None,
            priority: Priority::Normal,
            outcome: "REPLIED".into(),
            error: None,
            at: chrono::DateTime::from_timestamp(1_700_000_000 + n, 0).unwrap(),
        }
    }

    async fn store_with_agent(agent: &str) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store
            .write(Batch::new().put(AGENTS, agent, b"spec".to_vec()))
            .await
            .unwrap();
        (dir, store)
    }

    async fn write(store: &Store, noted: Vec<(String, Vec<Sent>)>) {
        for batch in store.view(move |v| writes(v, &noted)).await.unwrap() {
            store.write(batch).await.unwrap();
        }
    }

    async fn history(store: &Store, agent: &str) -> Vec<String> {
        let agent = agent.to_owned();
        let history = store.view(move |v| history_in(v, &agent)).await.unwrap();
        history.into_iter().map(|s| s.id).collect()
    }

    fn ids(range: std::ops::Range<i64>) -> Vec<String> {
        range.map(|n| sent(n).id).collect()
    }

    #[tokio::test]
    async fn writes_keep_each_agents_newest_fifty_and_drop_the_lines_of_an_agent_that_is_gone() {
        let (_d, store) = store_with_agent("a").await;
        write(&store, vec![("a".into(), (0..30).map(sent).collect())]).await;
        assert_eq!(history(&store, "a").await, ids(0..30));
        // 40 more: the 20 oldest go, in the same write.
        write(
            &store,
            vec![
                ("a".into(), (30..70).map(sent).collect()),
                ("gone".into(), vec![sent(1)]),
            ],
        )
        .await;
        assert_eq!(history(&store, "a").await, ids(20..70));
        assert!(history(&store, "gone").await.is_empty());
        // A line written again (a retried write) is not written twice.
        write(&store, vec![("a".into(), (69..71).map(sent).collect())]).await;
        assert_eq!(history(&store, "a").await, ids(21..71));
    }

    #[test]
    fn the_holders_unwritten_lines_are_the_newest_and_a_failed_write_gives_them_back() {
        let mut recent = Recent::default();
        for n in 0..60 {
            recent.note(sent(n));
        }
        // Never more than it keeps.
        let taken = recent.take_unwritten();
        assert_eq!(taken.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), ids(10..60));
        recent.note(sent(60));
        recent.unwritten_again(taken.len());
        let again = recent.take_unwritten();
        assert_eq!(again.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), ids(11..61));
        assert!(recent.take_unwritten().is_empty());
    }

    #[test]
    fn what_the_holder_noted_joins_what_is_written_once_each() {
        let written: Vec<Sent> = (0..45).map(sent).collect();
        let noted: Vec<Sent> = (40..52).map(sent).collect();
        let all: Vec<String> = merged(written, noted).into_iter().map(|s| s.id).collect();
        assert_eq!(all, ids(2..52));
    }

    #[test]
    fn failed_writes_are_tried_less_and_less_often_and_said_once_per_error() {
        let mut tries = Tries::default();
        let no_quorum = || "no majority answered within 10s".to_owned();
        let waits: Vec<(u128, bool)> = (0..8)
            .map(|_| tries.failed(no_quorum()))
            .map(|n| (n.after.as_millis(), n.warn))
            .collect();
        assert_eq!(
            waits,
            [
                (250, true),
                (500, false),
                (1000, false),
                (2000, false),
                (4000, false),
                (8000, false),
                (8000, false),
                (8000, false)
            ]
        );
        assert_eq!(
            tries.failed("the store is read-only".into()),
            Next {
                after: RETRY_AT_MOST,
                warn: true
            }
        );
        assert_eq!(tries.succeeded(), 9);
        assert_eq!(
            tries.failed(no_quorum()),
            Next {
                after: WRITE_EVERY,
                warn: true
            }
        );
        assert_eq!(tries.succeeded(), 1);
        assert_eq!(tries.succeeded(), 0);
    }
}

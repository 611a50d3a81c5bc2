//! What exec and process agents write: each stderr line, an exec task's stdout lines, and a
//! process agent's `log` lines (and an mcp agent's command's stderr lines), kept in the
//! store so any member serves them (`agentLogs`, `agentLogLines`) and a restart or failover
//! loses none.
//!
//! Bounded three ways: a line is cut at [`MAX_LINE`] bytes, a task attempt keeps its first
//! [`MAX_PER_TASK`] lines (then one line saying how many more were dropped), an agent keeps
//! its last [`MAX_PER_AGENT`] lines (older ones are deleted as new ones are written). A line
//! written faster than the store takes them is dropped, counted in
//! `troupe_agent_log_lines_dropped_total`, never waited for: an agent never slows for its log.
//!
//! Lines are written by one task per node, in batches of what arrived while the last batch was
//! written, keyed `{agent}/{seq}` with a seq in microseconds since the epoch, each greater
//! than the last this node wrote and than the agent's last line kept (a node whose clock is
//! behind goes on above it): so an agent's lines sort in the order they were written.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use troupe_runtime::store::{Batch, Store, StoreError, WeakStore};

use crate::tables::AGENT_LOGS;

/// The longest line kept, in bytes: longer ones are cut.
pub const MAX_LINE: usize = 2048;
/// The lines one task attempt may add to its agent's log.
pub const MAX_PER_TASK: u32 = 500;
/// The lines kept per agent.
pub const MAX_PER_AGENT: u64 = 1000;
/// Lines waiting to be written, across the node, past which new ones are dropped.
const QUEUE: usize = 16_384;
/// The most lines in one write.
const BATCH: usize = 2048;

/// One line an agent wrote.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// `stdout`, `stderr` or `log` (a process agent's `log` line, prefixed by its level).
    pub stream: String,
    pub line: String,
    /// The task whose attempt wrote it, when one did.
    pub task: Option<String>,
}

struct Written {
    agent: String,
    task: Option<String>,
    stream: &'static str,
    line: String,
    at: DateTime<Utc>,
}

/// Where a node's agents write their lines: cheap to clone, never waits. Nothing waits for
/// the lines either: an exec task's result may be applied a moment before its last lines.
#[derive(Clone, Default)]
pub struct LogBook(Option<mpsc::Sender<Written>>);

impl std::fmt::Debug for LogBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LogBook").field(&self.0.is_some()).finish()
    }
}

impl LogBook {
    /// Writes the lines given to it into `store`, from a task that ends when the last clone
    /// of the book is dropped (or the store is).
    pub fn start(store: &Store) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(store.downgrade(), rx));
        Self(Some(tx))
    }

    /// Adds `line` of `agent` (written during `task`) to the log.
    pub fn write(&self, agent: &str, task: Option<&str>, stream: &'static str, line: &str) {
        let Some(tx) = &self.0 else { return };
        let line = cut(line.trim_end_matches(['\r', '\n']), MAX_LINE);
        let written = Written {
            agent: agent.to_owned(),
            task: task.map(str::to_owned),
            stream,
            line,
            at: troupe_runtime::clock::now(),
        };
        if tx.try_send(written).is_err() {
            metrics::counter!("troupe_agent_log_lines_dropped_total").increment(1);
        }
    }
}

/// Splits what a pipe gives, in chunks, into lines; a line longer than [`MAX_LINE`] is given
/// in pieces of that size rather than held whole.
#[derive(Default)]
pub struct Lines(Vec<u8>);

impl Lines {
    /// Takes `chunk`, giving `each` the lines it completes.
    pub fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(&str)) {
        for piece in chunk.split_inclusive(|&b| b == b'\n') {
            self.0.extend_from_slice(piece);
            if piece.ends_with(b"\n") || self.0.len() >= MAX_LINE {
                each(&String::from_utf8_lossy(&self.0));
                self.0.clear();
            }
        }
    }

    /// Gives `each` what is left: a last line without its newline.
    pub fn finish(self, mut each: impl FnMut(&str)) {
        if !self.0.is_empty() {
            each(&String::from_utf8_lossy(&self.0));
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary, marked when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The node's log writer.
async fn write(store: WeakStore, mut rx: mpsc::Receiver<Written>) {
    let mut writer = Writer::default();
    let mut lines = Vec::new();
    while rx.recv_many(&mut lines, BATCH).await > 0 {
        let Some(store) = store.upgrade() else { return };
        if let Err(e) = writer.flush(&store, std::mem::take(&mut lines)).await {
            tracing::warn!(error = %e, "agent log lines could not be written");
        }
    }
}

#[derive(Default)]
struct Writer {
    last_seq: u64,
    /// Lines kept per agent, as far as this node knows (read from the store at its first line).
    kept: HashMap<String, u64>,
    /// Lines written per task attempt, for the per-task bound.
    per_task: HashMap<String, u32>,
}

impl Writer {
    fn next_seq(&mut self, at: DateTime<Utc>) -> u64 {
        self.last_seq = (self.last_seq + 1).max(at.timestamp_micros().max(0) as u64);
        self.last_seq
    }

    async fn flush(&mut self, store: &Store, lines: Vec<Written>) -> Result<(), StoreError> {
        // Bounded memory: an attempt that ran long ago writes no more, and an agent's count
        // is read again from the store when it is needed again.
        if self.per_task.len() > 10_000 {
            self.per_task.clear();
        }
        if self.kept.len() > 100_000 {
            self.kept.clear();
        }
        // An agent this writer has not written for yet (just started, or moved here): its
        // lines go on above the last one kept, whatever this node's clock says.
        for agent in lines.iter().map(|w| &w.agent) {
            if !self.kept.contains_key(agent) {
                let keys = oldest(store, agent, usize::MAX).await?;
                if let Some(last) = keys.last().and_then(|k| k.rsplit('/').next()?.parse::<u64>().ok()) {
                    self.last_seq = self.last_seq.max(last);
                }
                self.kept.insert(agent.clone(), keys.len() as u64);
            }
        }
        let mut batch = Batch::new();
        let mut added: HashMap<String, u64> = HashMap::new();
        for mut w in lines {
            if let Some(task) = &w.task {
                let n = self.per_task.entry(format!("{}/{task}", w.agent)).or_default();
                *n += 1;
                if *n > MAX_PER_TASK + 1 {
                    continue;
                }
                if *n == MAX_PER_TASK + 1 {
                    w.stream = "log";
                    w.line = format!("(further lines of task {task} are dropped: a task keeps {MAX_PER_TASK})");
                }
            }
            let seq = self.next_seq(w.at);
            let line = LogLine {
                seq,
                at: w.at,
                stream: w.stream.to_owned(),
                line: w.line,
                task: w.task,
            };
            let bytes = troupe_runtime::codec::encode(&line).map_err(|e| StoreError::Database(e.to_string()))?;
            batch = batch.put(AGENT_LOGS, key(&w.agent, seq), bytes);
            *added.entry(w.agent).or_default() += 1;
        }
        for (agent, n) in added {
            let kept = self.kept.get(&agent).copied().unwrap_or_default();
            let over = (kept + n).saturating_sub(MAX_PER_AGENT);
            if over > 0 {
                for old in oldest(store, &agent, over as usize).await? {
                    batch = batch.delete(AGENT_LOGS, old);
                }
            }
            self.kept.insert(agent, (kept + n).min(MAX_PER_AGENT));
        }
        if batch.is_empty() {
            return Ok(());
        }
        store.write(batch).await.map(drop)
    }
}

fn key(agent: &str, seq: u64) -> String {
    format!("{agent}/{seq:020}")
}

/// The keys of `agent`'s lines, oldest first, at most `limit`.
async fn oldest(store: &Store, agent: &str, limit: usize) -> Result<Vec<String>, StoreError> {
    let prefix = format!("{agent}/");
    store
        .view(move |v| {
            let mut out = Vec::new();
            v.scan_prefix(AGENT_LOGS, &prefix, |k, _| {
                if out.len() < limit {
                    out.push(k.to_owned());
                }
                Ok(out.len() < limit)
            })?;
            Ok(out)
        })
        .await
}

/// `agent`'s lines with a seq above `after`, oldest first, at most `limit`; without `after`,
/// its last `limit` lines.
pub async fn read(store: &Store, agent: &str, after: Option<u64>, limit: usize) -> Result<Vec<LogLine>, StoreError> {
    let prefix = format!("{agent}/");
    let from = after.map_or_else(|| prefix.clone(), |seq| key(agent, seq));
    let mut lines = store
        .view(move |v| {
            let mut out = Vec::new();
            v.scan(AGENT_LOGS, Some(&from), |k, bytes| {
                if !k.starts_with(&prefix) {
                    return Ok(false);
                }
                out.push(
                    troupe_runtime::codec::decode::<LogLine>(bytes).map_err(|e| StoreError::Database(e.to_string()))?,
                );
                Ok(after.is_none() || out.len() < limit)
            })?;
            Ok(out)
        })
        .await?;
    if after.is_none() && lines.len() > limit {
        lines.drain(..lines.len() - limit);
    }
    Ok(lines)
}

/// Deletes every line of `agent` into `batch` (the agent is being removed).
pub async fn delete_all(store: &Store, agent: &str, batch: &mut Batch) -> Result<(), StoreError> {
    for key in oldest(store, agent, usize::MAX).await? {
        batch.push(troupe_runtime::store::Op::Delete { table: AGENT_LOGS, key });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
        (dir, store)
    }

    fn line(agent: &str, task: Option<&str>, text: &str) -> Written {
        Written {
            agent: agent.into(),
            task: task.map(Into::into),
            stream: "stderr",
            line: text.into(),
            at: troupe_runtime::clock::now(),
        }
    }

    #[tokio::test]
    async fn an_agent_keeps_its_last_lines_in_the_order_written() {
        let (_dir, store) = store().await;
        let mut writer = Writer::default();
        let total = MAX_PER_AGENT as usize + 30;
        for chunk in (0..total).collect::<Vec<_>>().chunks(400) {
            let lines = chunk.iter().map(|i| line("a", None, &format!("line {i}"))).collect();
            writer.flush(&store, lines).await.unwrap();
        }
        writer.flush(&store, vec![line("b", None, "other")]).await.unwrap();
        // A writer that starts again (another node) counts what is kept.
        let mut again = Writer::default();
        again
            .flush(&store, vec![line("a", None, "after a restart")])
            .await
            .unwrap();
        let kept = read(&store, "a", Some(0), usize::MAX).await.unwrap();
        assert_eq!(kept.len(), MAX_PER_AGENT as usize);
        assert_eq!(kept[0].line, format!("line {}", total + 1 - MAX_PER_AGENT as usize));
        assert_eq!(kept.last().unwrap().line, "after a restart");
        assert!(kept.windows(2).all(|w| w[0].seq < w[1].seq));
        let last = read(&store, "a", None, 2).await.unwrap();
        assert_eq!(
            last.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
            [format!("line {}", total - 1).as_str(), "after a restart"]
        );
        let after = read(&store, "a", Some(last[0].seq), 10).await.unwrap();
        assert_eq!(after, last[1..]);
        assert_eq!(read(&store, "b", None, 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_task_keeps_its_first_lines_and_says_what_it_dropped() {
        let (_dir, store) = store().await;
        let mut writer = Writer::default();
        let lines = (0..MAX_PER_TASK + 20)
            .map(|i| line("a", Some("t1"), &format!("{i}")))
            .collect();
        writer.flush(&store, lines).await.unwrap();
        let kept = read(&store, "a", Some(0), usize::MAX).await.unwrap();
        assert_eq!(kept.len(), MAX_PER_TASK as usize + 1);
        assert_eq!(kept[MAX_PER_TASK as usize - 1].line, format!("{}", MAX_PER_TASK - 1));
        assert!(
            kept.last()
                .unwrap()
                .line
                .contains("further lines of task t1 are dropped"),
            "{:?}",
            kept.last()
        );
    }

    #[tokio::test]
    async fn a_writer_on_a_node_whose_clock_is_behind_goes_on_above_the_last_line_kept() {
        let (_dir, store) = store().await;
        let mut ahead = Writer::default();
        let mut early = line("a", None, "from the node ahead");
        early.at += chrono::Duration::hours(1);
        ahead.flush(&store, vec![early]).await.unwrap();
        // The agent moved to a node an hour behind.
        let mut behind = Writer::default();
        behind
            .flush(&store, vec![line("a", None, "after the move")])
            .await
            .unwrap();
        let kept = read(&store, "a", Some(0), 10).await.unwrap();
        let said: Vec<_> = kept.iter().map(|l| l.line.as_str()).collect();
        assert_eq!(said, ["from the node ahead", "after the move"]);
    }

    #[test]
    fn lines_are_split_across_chunks() {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        lines.feed(b"one\ntw", |l| out.push(l.to_owned()));
        lines.feed(b"o\nthree", |l| out.push(l.to_owned()));
        lines.finish(|l| out.push(l.to_owned()));
        assert_eq!(out, ["one\n", "two\n", "three"]);
    }

    #[test]
    fn a_long_line_is_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_LINE);
        let cut = cut(&long, MAX_LINE);
        assert!(cut.len() <= MAX_LINE + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}

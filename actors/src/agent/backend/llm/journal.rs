//! The steps of an LLM task, each committed to the store before the next is taken: a model's
//! reply (its text, the tool calls it asked for, its tokens), then each call's result. A
//! loop that starts again (a restart, a failover, a `kill -9` of its node) reads them back
//! and goes on after the last one: no committed model call is made again, and a call with
//! no committed result is made again with the same key. A reply whose calls only read may be
//! held and committed with their results, one write for the step ([`Journal::hold`]), sent
//! while the model is asked again ([`Journal::send`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::{Batch, Store};

use crate::tables::{LLM_STEPS, LLM_USAGE};

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// The model's id of the call (`call_…`, `toolu_…`).
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them: JSON text, perhaps not valid.
    pub arguments: String,
}

/// Tokens one model call took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
}

impl std::ops::AddAssign for Tokens {
    fn add_assign(&mut self, other: Self) {
        self.input += other.input;
        self.output += other.output;
    }
}

/// One committed step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// What the model answered to its `step`-th call (1, 2, …).
    Reply {
        step: u32,
        text: String,
        calls: Vec<Call>,
        tokens: Tokens,
        /// At the node's price table when it was committed (0 for a model not in it).
        cost_usd: f64,
        model: String,
        finish: Option<String>,
        latency_ms: u64,
        at: DateTime<Utc>,
    },
    /// The result of the call `call` of that step's reply, as the model is given it.
    Result {
        step: u32,
        call: String,
        content: String,
        error: bool,
        at: DateTime<Utc>,
    },
    /// The MCP servers' tools the model is offered, under the names it is offered them by:
    /// committed before the first model call, so a loop that starts again offers the same.
    Offered { tools: Vec<super::wire::Tool> },
    /// What the task began with besides its payload: its session's earlier exchanges and
    /// the swarm memory put into the system prompt; committed before the first model call,
    /// so a loop that starts again sends the same conversation.
    Context {
        history: Vec<(String, String)>,
        memory: Vec<(String, String)>,
    },
}

/// What one task cost its agent on one day (UTC), or what an agent spent, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

impl Usage {
    pub fn tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    pub(super) fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd = troupe_runtime::config::usd(self.cost_usd + other.cost_usd);
    }
}

/// What `agent` spent over all its tasks, and on `day` (`YYYY-MM-DD`, UTC).
pub async fn spent(store: &Store, agent: &str, day: &str) -> Result<(Usage, Usage), String> {
    let (prefix, today) = (format!("{agent}/"), format!("{agent}/{day}/"));
    store
        .view(move |v| {
            let (mut all, mut on_day) = (Usage::default(), Usage::default());
            v.scan_prefix(LLM_USAGE, &prefix, |k, bytes| {
                let usage: Usage = troupe_runtime::codec::decode(bytes)?;
                all.add(&usage);
                if k.starts_with(&today) {
                    on_day.add(&usage);
                }
                Ok(true)
            })?;
            Ok((all, on_day))
        })
        .await
        .map_err(|e| format!("the agent's usage could not be read: {e}"))
}

/// A task's steps so far, and where new ones are committed. Without a store (backends
/// under test) they are kept in memory only.
pub struct Journal {
    store: Option<Store>,
    agent: String,
    /// Who else the task's usage is counted for: its agent's swarm (`swarm:<id>`) and
    /// project (`project:<name>`).
    groups: Vec<String>,
    task: String,
    records: Vec<Record>,
    /// How many of the last records are held, not yet committed.
    held: usize,
}

fn key(task: &str, index: usize) -> String {
    format!("{task}/{index:06}")
}

/// How many records LLM task `task` has committed (0 for another task), counted without
/// reading them.
pub fn committed(store: &Store, task: &str) -> Result<usize, String> {
    let prefix = format!("{task}/");
    store
        .view_now(|v| {
            let mut n = 0;
            v.scan_prefix(LLM_STEPS, &prefix, |_, _| {
                n += 1;
                Ok(true)
            })?;
            Ok(n)
        })
        .map_err(|e| format!("the task's steps could not be read: {e}"))
}

/// A day as the usage table names it.
pub fn day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

impl Journal {
    /// The steps `task` committed before, oldest first.
    pub async fn load(store: Option<Store>, agent: &str, task: &str) -> Result<Self, String> {
        let mut records = Vec::new();
        if let Some(store) = &store {
            let prefix = format!("{task}/");
            // Read here, not on a blocking thread: a task's own steps (at most its agent's
            // `maxSteps` replies with their results), none at all for a task that just began.
            records = store
                .view_now(|v| {
                    let mut out = Vec::new();
                    v.scan_prefix(LLM_STEPS, &prefix, |_, bytes| {
                        out.push(troupe_runtime::codec::decode::<Record>(bytes)?);
                        Ok(true)
                    })?;
                    Ok(out)
                })
                .map_err(|e| format!("the task's earlier steps could not be read: {e}"))?;
        }
        Ok(Self {
            store,
            agent: agent.to_owned(),
            groups: Vec::new(),
            task: task.to_owned(),
            records,
            held: 0,
        })
    }

    /// Counts the task's usage for `groups` too (see [`Journal::groups`]).
    pub fn counting(mut self, groups: Vec<String>) -> Self {
        self.groups = groups;
        self
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The MCP tools offered when the task began, if it began.
    pub fn offered(&self) -> Option<&[super::wire::Tool]> {
        self.records.iter().find_map(|r| match r {
            Record::Offered { tools } => Some(tools.as_slice()),
            _ => None,
        })
    }

    /// The context the task began with, if it began with one.
    pub fn context(&self) -> Option<super::wire::Context> {
        self.records.iter().find_map(|r| match r {
            Record::Context { history, memory } => Some(super::wire::Context {
                history: history.clone(),
                memory: memory.clone(),
            }),
            _ => None,
        })
    }

    /// How many model calls were committed.
    pub fn steps(&self) -> u32 {
        self.records
            .iter()
            .filter(|r| matches!(r, Record::Reply { .. }))
            .count() as u32
    }

    /// The last reply: its step and calls.
    pub fn last_reply(&self) -> Option<(u32, &str, &[Call])> {
        self.records.iter().rev().find_map(|r| match r {
            Record::Reply { step, text, calls, .. } => Some((*step, text.as_str(), calls.as_slice())),
            Record::Result { .. } | Record::Offered { .. } | Record::Context { .. } => None,
        })
    }

    /// What the model call of `step` cost.
    pub fn cost_of(&self, step: u32) -> f64 {
        self.records
            .iter()
            .find_map(|r| match r {
                Record::Reply { step: s, cost_usd, .. } if *s == step => Some(*cost_usd),
                _ => None,
            })
            .unwrap_or(0.0)
    }

    /// The calls of the last reply that have no result yet, with that reply's step.
    pub fn unanswered(&self) -> Vec<(u32, Call)> {
        let Some((step, _, calls)) = self.last_reply() else {
            return Vec::new();
        };
        calls
            .iter()
            .filter(|c| {
                !self
                    .records
                    .iter()
                    .any(|r| matches!(r, Record::Result { step: s, call, .. } if *s == step && call == &c.id))
            })
            .map(|c| (step, c.clone()))
            .collect()
    }

    /// What the model calls kept here took, those of `day` (UTC) alone when given.
    pub fn usage(&self, day_only: Option<chrono::NaiveDate>) -> Usage {
        usage_of(&self.records, day_only)
    }

    /// Commits `record` (with a `TASK_STEP` event about the task) and keeps it, in one write
    /// with the records held before it.
    pub async fn commit(&mut self, record: Record) -> Result<(), String> {
        self.records.push(record);
        self.held += 1;
        self.flush().await
    }

    /// Keeps `record` without committing it yet: it goes with the next commit or
    /// [`Journal::flush`]. For a reply whose calls only read, so the reply and its results
    /// take one commit; a loop stopped before that commit calls the model again.
    pub fn hold(&mut self, record: Record) {
        self.records.push(record);
        self.held += 1;
    }

    /// Whether records are held, not yet committed.
    pub fn holding(&self) -> bool {
        self.held > 0
    }

    /// Commits the records held, in one write.
    pub async fn flush(&mut self) -> Result<(), String> {
        self.send()?.durable().await
    }

    /// Hands the records held to the store's writer, in one write, without waiting for it:
    /// the loop asks the model again while they commit, and takes its reply once
    /// [`Sent::durable`] says they are. Writes are committed in the order they were handed
    /// over, so every later record commits after these.
    pub fn send(&mut self) -> Result<Sent, String> {
        if self.held == 0 {
            return Ok(Sent(None));
        }
        let batch = match &self.store {
            Some(_) => Some(self.held_batch()?),
            None => None,
        };
        // Not held any more, whatever the write's outcome: a write that failed may still
        // have been applied, and is never sent twice.
        self.held = 0;
        Ok(Sent(
            self.store.as_ref().zip(batch).map(|(store, batch)| store.submit(batch)),
        ))
    }

    /// The write of the records held: each with its `TASK_STEP` event, a reply with the rows
    /// of what the task cost that day.
    fn held_batch(&self) -> Result<Batch, String> {
        let mut batch = Batch::new();
        for index in self.records.len() - self.held..self.records.len() {
            batch.extend(self.batch_of(index)?);
        }
        Ok(batch)
    }

    fn batch_of(&self, index: usize) -> Result<Batch, String> {
        let record = &self.records[index];
        let data = match record {
            Record::Reply {
                step,
                calls,
                tokens,
                cost_usd,
                latency_ms,
                ..
            } => json!({
                "step": step,
                "kind": "reply",
                "toolCalls": calls.iter().map(|c| &c.name).collect::<Vec<_>>(),
                "inputTokens": tokens.input,
                "outputTokens": tokens.output,
                "costUsd": cost_usd,
                "latencyMs": latency_ms,
            }),
            Record::Result { step, call, error, .. } => {
                json!({ "step": step, "kind": "toolResult", "call": call, "error": error })
            }
            Record::Offered { tools } => {
                json!({ "step": 0, "kind": "offered", "tools": tools.iter().map(|t| &t.name).collect::<Vec<_>>() })
            }
            Record::Context { history, memory } => {
                json!({ "step": 0, "kind": "context", "history": history.len(), "memory": memory.iter().map(|(k, _)| k).collect::<Vec<_>>() })
            }
        };
        let bytes = troupe_runtime::codec::encode(record).map_err(|e| e.to_string())?;
        let mut batch = Batch::new()
            .put(LLM_STEPS, key(&self.task, index), bytes)
            .event(NewEvent::new("TASK_STEP", Some(self.task.clone()), data));
        if let Record::Reply { at, .. } = record {
            // What this task cost its agent that day, up to this reply: the agent's budgets
            // sum these rows.
            let today = day(*at);
            let usage = usage_of(&self.records[..=index], Some(at.date_naive()));
            let bytes = troupe_runtime::codec::encode(&usage).map_err(|e| e.to_string())?;
            for owner in std::iter::once(&self.agent).chain(&self.groups) {
                batch = batch.put(LLM_USAGE, format!("{owner}/{today}/{}", self.task), bytes.clone());
            }
        }
        Ok(batch)
    }
}

/// Records handed to the writer by [`Journal::send`] (none when nothing was held or the
/// journal keeps no store).
#[must_use = "the records are durable only once `durable` says so"]
pub struct Sent(Option<troupe_runtime::store::Ticket>);

impl Sent {
    /// Waits until the records sent are committed.
    pub async fn durable(self) -> Result<(), String> {
        match self.0 {
            Some(ticket) => ticket
                .durable()
                .await
                .map(drop)
                .map_err(|e| format!("the step could not be committed: {e}")),
            None => Ok(()),
        }
    }
}

/// A loop stopped while records were held (a cancel aborts it between a reply and its
/// results' commit): they are committed all the same, so what the model call cost is
/// counted against the budgets.
impl Drop for Journal {
    fn drop(&mut self) {
        let (Some(store), true) = (&self.store, self.holding()) else {
            return;
        };
        let (Ok(batch), Ok(runtime)) = (self.held_batch(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let store = store.clone();
        runtime.spawn(async move {
            if let Err(e) = store.write(batch).await {
                tracing::warn!(error = %e, "the held steps of a stopped LLM loop could not be committed");
            }
        });
    }
}

/// What the model calls among `records` took, those of `day` (UTC) alone when given.
fn usage_of(records: &[Record], day_only: Option<chrono::NaiveDate>) -> Usage {
    let mut sum = Usage::default();
    for r in records {
        if let Record::Reply {
            tokens, cost_usd, at, ..
        } = r
        {
            if day_only.is_none_or(|d| at.date_naive() == d) {
                sum.add(&Usage {
                    input_tokens: tokens.input,
                    output_tokens: tokens.output,
                    cost_usd: *cost_usd,
                });
            }
        }
    }
    sum
}

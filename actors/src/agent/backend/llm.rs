//! The `llm` backend: a model endpoint (OpenAI-compatible chat completions, or Anthropic's
//! Messages API) that runs each task as a loop: call the model, run the tool calls it asks
//! for, give it the results, until it answers, or `maxSteps` model calls, a cancel or the
//! attempt's deadline stop it. Each step is committed before the next one's reply is taken
//! (see [`journal`]), so an attempt that starts again goes on after the last committed step.
//!
//! 429 and 5xx answers (and connection errors) are retried within the model call, honouring
//! `Retry-After`. The API key is read on the node when the agent starts, from what the
//! node's admin allows (see `agent::secrets`); it is never part of the spec, an error or a
//! log line.

mod approvals;
mod budgets;
mod call;
mod deltas;
mod journal;
pub mod retention;
mod sessions;
mod tools;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};
use tracing::Instrument;
use troupe_runtime::store::Store;

use super::{Backend, ErrandKind, Lent, Link, Prices, Signal};
use crate::agent::protocol::MemoryOp;
use crate::agent::secrets::Secrets;
use crate::agent::spec::{Dialect, LlmBackend};
use crate::task::{Assignment, Outcome, TaskSpec};
pub use approvals::{decide, get, list as approvals, withdrawn_by_end, Approval, Decision, Refused};
pub use deltas::{Delta, Deltas};
use journal::Journal;
pub use journal::{committed, Call, Record, Usage};
pub use tools::matching_nothing;
use tools::Errands;
use wire::Tool;

/// An attempt's limit (every retry included) when neither the task nor the backend sets one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Llm {
    spec: LlmBackend,
    client: reqwest::Client,
    secrets: Arc<Secrets>,
    key: Option<String>,
    store: Option<Store>,
    errands: Option<Errands>,
    tools: Arc<Vec<Tool>>,
    agent: String,
    prices: Arc<Prices>,
    deltas: Deltas,
    link: Link,
    /// The agent's swarm, if it is a member of one.
    swarm: Option<String>,
    project: Option<String>,
}

impl Llm {
    pub fn new(spec: LlmBackend, secrets: Arc<Secrets>) -> Self {
        let tools = Arc::new(tools::offered(&spec.tools));
        Self {
            spec,
            client: super::http_client(),
            secrets,
            key: None,
            store: None,
            errands: None,
            tools,
            agent: String::new(),
            prices: Arc::default(),
            deltas: Deltas::default(),
            link: Link::detached(),
            swarm: None,
            project: None,
        }
    }

    /// The agent `agent`, committing each task's steps to the store it is lent, priced at
    /// its price table.
    pub fn for_agent(mut self, agent: &str, lent: &Lent) -> Self {
        self.agent = agent.to_owned();
        self.store = lent.store.clone();
        self.prices = lent.prices.clone();
        self.deltas = lent.deltas.clone();
        if let Some(http) = &lent.http {
            self.client = http.clone();
        }
        self
    }

    /// Counts what its tasks spend for its swarm (checked against the swarm's budget) and
    /// its project too.
    pub fn grouped(mut self, swarm: Option<&str>, project: &str) -> Self {
        self.swarm = swarm.map(str::to_owned);
        self.project = Some(project.to_owned());
        self
    }

    /// Carries the tool calls with `errands` instead of the agent's link (tests).
    #[cfg(test)]
    fn carrying(mut self, errands: Errands) -> Self {
        self.errands = Some(errands);
        self
    }
}

impl Backend for Llm {
    fn start(&mut self, link: Link) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            // Judged again here, on the node that runs the agent: its allow-list applies, and
            // a file is resolved as it is now.
            self.key = match &self.spec.api_key {
                None => None,
                Some(key) => Some(self.secrets.read(key).await.map_err(|e| e.to_string())?),
            };
            if self.errands.is_none() {
                self.errands = Some(tools::via(link.clone()));
            }
            self.link = link;
            Ok(())
        })
    }

    fn run(&mut self, a: Assignment) -> BoxFuture<'static, Outcome> {
        let limit = a
            .timeout_ms
            .or(self.spec.timeout_ms)
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let turn = Loop {
            spec: self.spec.clone(),
            client: self.client.clone(),
            key: self.key.clone(),
            store: self.store.clone(),
            errands: self.errands.clone().unwrap_or_else(|| tools::via(Link::detached())),
            tools: self.tools.clone(),
            deadline: tokio::time::Instant::now() + limit,
            limit,
            agent: self.agent.clone(),
            prices: self.prices.clone(),
            deltas: self.deltas.clone(),
            link: self.link.clone(),
            attempt: a.attempt,
            swarm: self.swarm.clone(),
            project: self.project.clone(),
        };
        // The loop keeps its own time: a wait for an operator's approval does not count.
        Box::pin(turn.run(a))
    }

    fn own_timeouts(&self) -> bool {
        true
    }
}

/// One attempt of one task.
struct Loop {
    spec: LlmBackend,
    client: reqwest::Client,
    key: Option<String>,
    store: Option<Store>,
    errands: Errands,
    tools: Arc<Vec<Tool>>,
    deadline: tokio::time::Instant,
    limit: Duration,
    agent: String,
    prices: Arc<Prices>,
    deltas: Deltas,
    /// Where the task's progress note goes (a held call's wait).
    link: Link,
    attempt: u32,
    swarm: Option<String>,
    project: Option<String>,
}

impl Loop {
    /// `work`, within what is left of the attempt's time.
    async fn within<T>(&self, work: impl std::future::Future<Output = T>) -> Result<T, String> {
        tokio::time::timeout_at(self.deadline, work)
            .await
            .map_err(|_| format!("no answer within {} ms", self.limit.as_millis()))
    }

    /// Why `call` of `step` waits for an operator under the agent's policy, if it does.
    fn needs_approval(&self, journal: &Journal, step: u32, call: &journal::Call) -> Option<String> {
        let policy = &self.spec.approval;
        if let Some(pattern) = policy.tools.iter().find(|p| tools::glob(p, &call.name)) {
            return Some(format!("tool {} matches the approval pattern {pattern:?}", call.name));
        }
        let cost = journal.cost_of(step);
        policy
            .above_cost_usd
            .filter(|limit| cost > *limit)
            .map(|limit| format!("the model call that asked for it cost {cost} USD, above {limit}"))
    }

    /// Waits for an operator's decision on `call`; whether it may run, else the result the
    /// model is given. The wait is added to the attempt's time.
    async fn approved(
        &mut self,
        reason: String,
        task: &str,
        step: u32,
        call: &journal::Call,
        key: &str,
    ) -> Result<Result<(), String>, String> {
        let Some(store) = self.store.clone() else {
            return Ok(Err(
                "this call needs an operator's approval, and this agent keeps no store".into(),
            ));
        };
        let now = troupe_runtime::clock::now();
        let asked = Approval {
            id: key.to_owned(),
            task: task.to_owned(),
            agent: self.agent.clone(),
            step,
            call: call.id.clone(),
            tool: call.name.clone(),
            arguments: call.arguments.clone(),
            reason,
            requested_at: now,
            expires_at: self
                .spec
                .approval
                .timeout_ms
                .map(|ms| now + chrono::Duration::milliseconds(ms as i64)),
            decision: None,
        };
        let began = tokio::time::Instant::now();
        // The task says what it waits for, where its progress is shown.
        let note = |note: String, held: bool| Signal::Progress {
            task_id: task.to_owned(),
            attempt: self.attempt,
            fraction: None,
            note: Some(note),
            held,
        };
        // Recorded first: a task that says it awaits a person has its call pending.
        let asked = approvals::asked(&store, asked).await?;
        self.link
            .signal(note(format!("AWAITING_APPROVAL: {} (approval {key})", call.name), true));
        let decision = approvals::decided(&store, asked).await?;
        self.deadline += began.elapsed();
        let decided = if decision.approved { "approved" } else { "rejected" };
        self.link
            .signal(note(format!("{} {decided}: going on", call.name), false));
        Ok(if decision.approved {
            Ok(())
        } else {
            Err(format!(
                "rejected by {}: {}",
                if decision.by == "timeout" {
                    "the approval's timeout"
                } else {
                    "an operator"
                },
                decision.note.as_deref().unwrap_or("no reason given")
            ))
        })
    }

    async fn run(mut self, a: Assignment) -> Outcome {
        let groups = (self.swarm.iter().map(|s| format!("swarm:{s}")))
            .chain(self.project.iter().map(|p| format!("project:{p}")))
            .collect();
        let mut journal = Journal::load(self.store.clone(), &self.agent, &a.task_id)
            .await?
            .counting(groups);
        let task = self.task_spec(&a.task_id).await?;
        let (budget, session) = task.map_or((None, None), |t| (t.budget, t.session));
        let limits = self.limits(budget).await?;
        // The session's exchanges and the swarm memory, as they were when the task began.
        let context = match journal.context() {
            Some(context) => context,
            None if journal.records().is_empty() && (session.is_some() || !self.spec.memory_keys.is_empty()) => {
                let context = self.within(self.context(session.as_deref())).await??;
                let record = Record::Context {
                    history: context.history.clone(),
                    memory: context.memory.clone(),
                };
                journal.commit(record).await?;
                context
            }
            None => wire::Context::default(),
        };
        let opening = wire::opening(&self.spec, &a.payload, context)?;
        // Troupe's own tools, and the MCP servers' as they were offered when the task
        // began (listed and committed then, so the model sees the same names throughout).
        let mut offered = self.tools.as_ref().clone();
        if !self.spec.mcp_servers.is_empty() {
            let servers = match journal.offered() {
                Some(tools) => tools.to_vec(),
                None => {
                    let listed = tools::of_servers(&self.errands, &self.spec.mcp_servers, &self.spec.tools);
                    let tools = self.within(listed).await??;
                    journal.commit(Record::Offered { tools: tools.clone() }).await?;
                    tools
                }
            };
            offered.extend(servers);
        }
        loop {
            // The calls of the last reply that have no result yet: just asked for, or left
            // unanswered by an attempt that stopped. Each is answered before the model is
            // asked again (both APIs refuse a call with no result).
            for (step, call) in journal.unanswered() {
                let key = format!("{}/{step}/{}", a.task_id, call.id);
                let verdict = match self.needs_approval(&journal, step, &call) {
                    Some(reason) => {
                        // The call waits committed, with the reply that asked for it.
                        journal.flush().await?;
                        self.approved(reason, &a.task_id, step, &call, &key).await?
                    }
                    None => Ok(()),
                };
                let left = self.deadline.saturating_duration_since(tokio::time::Instant::now());
                let (content, error) = match verdict {
                    Ok(()) => {
                        let span = tracing::info_span!(
                            "execute_tool",
                            otel.name = %format!("execute_tool {}", call.name),
                            otel.kind = "internal",
                            gen_ai.operation.name = "execute_tool",
                            gen_ai.tool.name = %call.name,
                            gen_ai.tool.call.id = %call.id,
                            troupe.task.id = %a.task_id,
                        );
                        let read = tools::memory_read(&offered, &call);
                        match (&self.store, &self.swarm, read) {
                            // A read of its swarm's memory needs no errand: the replica is here.
                            (Some(store), Some(swarm), Some(key)) => {
                                self.within(tools::read_memory(store, swarm, &key))
                                    .instrument(span)
                                    .await?
                            }
                            _ => {
                                self.within(tools::run(&self.errands, &offered, &call, key, left))
                                    .instrument(span)
                                    .await?
                            }
                        }
                    }
                    Err(rejected) => (rejected, true),
                };
                let result = Record::Result {
                    step,
                    call: call.id,
                    content,
                    error,
                    at: troupe_runtime::clock::now(),
                };
                if journal.holding() {
                    journal.hold(result);
                } else {
                    journal.commit(result).await?;
                }
            }
            if let Some((_, text, [])) = journal.last_reply() {
                if let (Some(session), Some(store)) = (&session, &self.store) {
                    let mut said: Vec<_> = opening.own().cloned().collect();
                    said.push(("assistant".to_owned(), text.to_owned()));
                    let window = self.spec.session_window_tokens;
                    sessions::remember(store, (&self.agent, session), &a.task_id, said, window).await?;
                }
                return Ok(answer(&journal, text));
            }
            if journal.steps() >= self.spec.max_steps {
                journal.flush().await?;
                let calls = journal.steps();
                let plural = if calls == 1 { "" } else { "s" };
                return Err(format!(
                    "MAX_STEPS: the model made {calls} call{plural} without a final answer (maxSteps {})",
                    self.spec.max_steps
                ));
            }
            // A budget the store's usage rows count needs the held step in them.
            if self.counts_committed(limits) {
                journal.flush().await?;
            }
            self.within_budgets(&mut journal, limits, &a.task_id).await?;
            let (path, body) = wire::request(&self.spec, &opening, journal.records(), &offered);
            // The step held (a reply that only read, with its results) commits while the
            // model is asked again; its reply is taken once that commit is durable, so a loop
            // that starts again never finds a reply without the step before it.
            let sent = journal.send()?;
            let began = std::time::Instant::now();
            let step = journal.steps() + 1;
            let span = self.model_span(&a.task_id, step);
            let turn = self
                .within(self.complete(path, &body, (&a.task_id, step)))
                .instrument(span.clone())
                .await;
            let latency_ms = began.elapsed().as_millis() as u64;
            sent.durable().await?;
            let turn = turn??;
            let model = turn.model.unwrap_or_else(|| self.spec.model.clone());
            let cost_usd = self
                .prices
                .get(&self.spec.model)
                .or_else(|| self.prices.get(&model))
                .map_or(0.0, |p| p.of(turn.tokens.input, turn.tokens.output));
            span.record("gen_ai.response.model", model.as_str());
            span.record("gen_ai.usage.input_tokens", turn.tokens.input);
            span.record("gen_ai.usage.output_tokens", turn.tokens.output);
            if let Some(finish) = &turn.finish {
                span.record("gen_ai.response.finish_reasons", finish.as_str());
            }
            let labels = [("agent", self.agent.clone()), ("model", model.clone())];
            metrics::counter!("troupe_llm_tokens_total", &labels).increment(turn.tokens.input + turn.tokens.output);
            metrics::gauge!("troupe_llm_cost_usd", &labels).increment(cost_usd);
            // A reply whose calls only read is committed with their results, one write for
            // the step; any other before its calls run.
            let quiet = !turn.calls.is_empty() && turn.calls.iter().all(|c| tools::only_reads(&offered, c));
            let reply = Record::Reply {
                step,
                text: turn.text,
                calls: turn.calls,
                tokens: turn.tokens,
                cost_usd,
                model,
                finish: turn.finish,
                latency_ms,
                at: troupe_runtime::clock::now(),
            };
            if quiet {
                journal.hold(reply);
            } else {
                journal.commit(reply).await?;
            }
        }
    }

    /// The task's spec in the store (its budget, its session).
    async fn task_spec(&self, task: &str) -> Result<Option<TaskSpec>, String> {
        let Some(store) = &self.store else { return Ok(None) };
        let spec = store
            .view_now(|v| v.get(crate::tables::TASKS, task))
            .map_err(|e| format!("the task's spec could not be read: {e}"))?;
        spec.map(|bytes| troupe_runtime::codec::decode::<TaskSpec>(&bytes).map_err(|e| e.to_string()))
            .transpose()
    }

    /// What a task begins with: `session`'s kept exchanges and the swarm memory the agent's
    /// `memoryKeys` name (a key that is not set, or cannot be read, as for an agent in no
    /// swarm, is left out and logged).
    async fn context(&self, session: Option<&str>) -> Result<wire::Context, String> {
        let mut context = wire::Context::default();
        if let (Some(session), Some(store)) = (session, &self.store) {
            context.history = sessions::read(store, &self.agent, session).await?.history();
        }
        for key in &self.spec.memory_keys {
            let asked = ErrandKind::Memory(MemoryOp::Get { key: key.clone() });
            match (self.errands)(asked).await {
                // A key that is not set answers no entry: left out, as one that cannot be read.
                Ok(entry) if entry.get("version").is_none() => {
                    tracing::info!(agent = %self.agent, %key, "a memory key for the prompt is not set")
                }
                Ok(entry) => {
                    let value = entry.get("value").cloned().unwrap_or(Value::Null);
                    context.memory.push((key.clone(), value.to_string()));
                }
                Err(why) => {
                    tracing::info!(agent = %self.agent, %key, %why, "a memory key for the prompt could not be read")
                }
            }
        }
        Ok(context)
    }

    /// The span of model call `step`, named and attributed as OpenTelemetry's GenAI
    /// conventions say (`chat {model}`); its response's attributes are recorded on it once
    /// the reply is read.
    fn model_span(&self, task: &str, step: u32) -> tracing::Span {
        let provider = match self.spec.dialect {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
        };
        tracing::info_span!(
            "chat",
            otel.name = %format!("chat {}", self.spec.model),
            otel.kind = "client",
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = provider,
            gen_ai.request.model = %self.spec.model,
            gen_ai.request.stream = self.spec.stream,
            gen_ai.agent.id = %self.agent,
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.response.finish_reasons = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            troupe.task.id = %task,
            troupe.step = step,
        )
    }
}

/// The committed steps of LLM task `task`, oldest first (none for another task): its model
/// replies and tool results, not the list of tools it was offered.
pub async fn transcript(store: &Store, task: &str) -> Result<Vec<Record>, String> {
    let journal = Journal::load(Some(store.clone()), "", task).await?;
    Ok(journal
        .records()
        .iter()
        .filter(|r| !matches!(r, Record::Offered { .. } | Record::Context { .. }))
        .cloned()
        .collect())
}

/// What LLM agent `agent` spent over all its tasks, and today (UTC), as committed; or the
/// LLM members of a swarm (`swarm:<id>`), or the LLM agents of a project (`project:<name>`).
pub async fn spent_by(store: &Store, agent: &str) -> Result<(Usage, Usage), String> {
    journal::spent(store, agent, &journal::day(troupe_runtime::clock::now())).await
}

/// The task's result: the final answer, with what the loop took to get there.
fn answer(journal: &Journal, text: &str) -> Value {
    let (mut model, mut finish) = (Value::Null, Value::Null);
    if let Some(Record::Reply {
        model: m, finish: f, ..
    }) = journal
        .records()
        .iter()
        .rev()
        .find(|r| matches!(r, Record::Reply { .. }))
    {
        model = json!(m);
        finish = json!(f);
    }
    let used = journal.usage(None);
    let calls = journal
        .records()
        .iter()
        .filter(|r| matches!(r, Record::Result { .. }))
        .count();
    json!({
        "content": text,
        "model": model,
        "finishReason": finish,
        "steps": journal.steps(),
        "toolCalls": calls,
        "usage": {
            "promptTokens": used.input_tokens,
            "completionTokens": used.output_tokens,
            "totalTokens": used.tokens(),
        },
        "costUsd": used.cost_usd,
    })
}

#[cfg(test)]
use call::{backoff, retry_after, MAX_RETRY_AFTER};

#[cfg(test)]
mod tests;

//! Budgets, checked before each model call against the usage already committed: the
//! task's, the agent's (in all and per UTC day) and its swarm's. A restart cannot reset one.
//! The task's own budget counts its step still committing too (see [`Journal::send`]).

use serde_json::json;
use troupe_runtime::store::Store;

use super::journal::{self, Journal};
use super::Loop;
use crate::task::Budget;

/// The budgets a task's loop is held to besides its agent's (which come with the agent's
/// spec): read once when the loop starts, since neither changes while a task runs (a
/// swarm's budget is fixed when the swarm is made). The usage they are checked against is
/// read before every model call.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Limits {
    task: Option<Budget>,
    swarm: Option<Budget>,
}

impl Loop {
    /// The task's budget, and its agent's swarm's from the swarm's spec in the store.
    pub(super) async fn limits(&self, task: Option<Budget>) -> Result<Limits, String> {
        let swarm = match (&self.store, &self.swarm) {
            (Some(store), Some(swarm)) => swarm_budget(store, swarm).await?,
            _ => None,
        };
        Ok(Limits { task, swarm })
    }

    /// Whether a budget is checked against the usage rows in the store (the agent's, its
    /// swarm's), not the task's own records alone.
    pub(super) fn counts_committed(&self, limits: Limits) -> bool {
        self.agent_limits().iter().any(Option::is_some) || (self.swarm.is_some() && limits.swarm.is_some())
    }

    /// The agent's own budgets: tokens and cost in all, tokens and cost per day.
    fn agent_limits(&self) -> [Option<f64>; 4] {
        let agent = self.spec.budget;
        [
            agent.max_tokens.map(|t| t as f64),
            agent.max_cost_usd,
            agent.max_tokens_per_day.map(|t| t as f64),
            agent.max_cost_usd_per_day,
        ]
    }

    /// Fails with BUDGET_EXCEEDED (after the records held and an event with the figures)
    /// when the task's or the agent's usage, as committed, has reached one of their budgets.
    pub(super) async fn within_budgets(&self, journal: &mut Journal, limits: Limits, id: &str) -> Result<(), String> {
        let used = journal.usage(None);
        let task = limits.task.unwrap_or_default();
        let mut checks = vec![
            (
                "the task's maxTokens",
                task.max_tokens.map(|t| t as f64),
                used.tokens() as f64,
            ),
            ("the task's maxCostUsd", task.max_cost_usd, used.cost_usd),
        ];
        let own = self.agent_limits();
        let today = journal::day(troupe_runtime::clock::now());
        if let (Some(store), true) = (&self.store, own.iter().any(Option::is_some)) {
            let (all, on_day) = journal::spent(store, &self.agent, &today).await?;
            checks.extend([
                ("the agent's maxTokens", own[0], all.tokens() as f64),
                ("the agent's maxCostUsd", own[1], all.cost_usd),
                ("the agent's maxTokensPerDay", own[2], on_day.tokens() as f64),
                ("the agent's maxCostUsdPerDay", own[3], on_day.cost_usd),
            ]);
        }
        if let (Some(store), Some(swarm), Some(budget)) = (&self.store, &self.swarm, limits.swarm) {
            let (all, _) = journal::spent(store, &format!("swarm:{swarm}"), &today).await?;
            checks.extend([
                (
                    "the swarm's maxTokens",
                    budget.max_tokens.map(|t| t as f64),
                    all.tokens() as f64,
                ),
                ("the swarm's maxCostUsd", budget.max_cost_usd, all.cost_usd),
            ]);
        }
        let Some((budget, limit, spent)) = checks
            .into_iter()
            .find_map(|(what, limit, spent)| limit.filter(|l| spent >= *l).map(|l| (what, l, spent)))
        else {
            return Ok(());
        };
        // The step it counted is committed first, so the stop follows it in the events.
        journal.flush().await?;
        if let Some(store) = &self.store {
            let data = json!({
                "agent": self.agent, "budget": budget, "limit": limit, "spent": spent,
                "task": { "inputTokens": used.input_tokens, "outputTokens": used.output_tokens, "costUsd": used.cost_usd },
            });
            let event = troupe_runtime::events::NewEvent::new("BUDGET_EXCEEDED", Some(id.to_owned()), data);
            store
                .write(troupe_runtime::store::Batch::new().event(event))
                .await
                .map_err(|e| e.to_string())?;
        }
        Err(format!(
            "BUDGET_EXCEEDED: {budget} is {limit} and {spent} was spent, before model call {}",
            journal.steps() + 1
        ))
    }
}

/// The budget of swarm `swarm`, from its spec in the store.
async fn swarm_budget(store: &Store, swarm: &str) -> Result<Option<Budget>, String> {
    let spec = store
        .view_now(|v| v.get(crate::tables::SWARMS, swarm))
        .map_err(|e| format!("the swarm's spec could not be read: {e}"))?;
    Ok(match spec {
        Some(bytes) => {
            troupe_runtime::codec::decode::<crate::swarm::SwarmSpec>(&bytes)
                .map_err(|e| e.to_string())?
                .budget
        }
        None => None,
    })
}

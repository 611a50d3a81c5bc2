//! The store tables the domain actors own. Specs (what a user asked for) and statuses (what
//! was observed) live in separate tables; both are replicated, like every table of the store.

use troupe_runtime::store::{Store, StoreError, Table, View};

use crate::error::ApiError;

/// Agent specs by id: [`crate::agent::AgentSpec`].
pub const AGENTS: Table = Table::new("agents");
/// Agents by owner, `<node | swarm/<swarm id>>/<agent id>` (empty values), written beside
/// the spec, so an owner reads its own agents only.
pub const AGENTS_BY_OWNER: Table = Table::new("agents_by_owner");
/// Agent statuses by id: [`crate::agent::AgentStatus`]; written by the agent's supervisor.
pub const AGENT_STATUS: Table = Table::new("agent_status");
/// Task counters by agent id: [`crate::agent::AgentStats`]; written by the scheduler.
pub const AGENT_STATS: Table = Table::new("agent_stats");
/// Task specs by id: [`crate::task::TaskSpec`], written once at submit.
pub const TASKS: Table = Table::new("tasks");
/// Task statuses by id: [`crate::task::TaskStatus`], rewritten at every transition.
pub const TASK_STATUS: Table = Table::new("task_status");
/// Ids of the tasks not yet in a terminal state, so recovery reads only those.
pub const OPEN_TASKS: Table = Table::new("open_tasks");
/// Agent checkpoints by `<agent id>/<checkpoint id>`: [`crate::agent::Checkpoint`].
pub const CHECKPOINTS: Table = Table::new("checkpoints");
/// What exec and process agents wrote, keyed `{agent}/{seq}`: [`crate::agent::LogLine`]
/// (see `agent::logs`).
pub const AGENT_LOGS: Table = Table::new("agent_logs");
/// The committed steps of LLM tasks (model replies, tool results), keyed `{task}/{index}`.
pub const LLM_STEPS: Table = Table::new("llm_steps");
/// Tool calls of LLM tasks that wait (or waited) for an operator, keyed
/// `{task}/{step}/{call}`: [`crate::agent::Approval`].
pub const LLM_APPROVALS: Table = Table::new("llm_approvals");
/// The conversations LLM agents keep across tasks, keyed `{agent}/{session}`:
/// [`crate::agent::LlmSession`].
pub const LLM_SESSIONS: Table = Table::new("llm_sessions");
/// What each LLM task cost its agent each day, keyed `{agent}/{YYYY-MM-DD}/{task}`:
/// [`crate::agent::LlmUsage`]; an agent's budgets are checked against their sums.
pub const LLM_USAGE: Table = Table::new("llm_usage");
/// Host specs by id: [`crate::host::HostSpec`]; a host's state is live, from its driver.
pub const HOSTS: Table = Table::new("hosts");
/// VM specs by id: [`crate::vm::VmSpec`].
pub const VMS: Table = Table::new("vms");
/// VM statuses by id: [`crate::vm::VmStatus`] (the host holding it, the last observed state);
/// written by the VM's actor.
pub const VM_STATUS: Table = Table::new("vm_status");
/// Messages that expired or could not be delivered or answered, by message id:
/// [`crate::service::DeadMessage`].
pub const MESSAGE_DEAD_LETTERS: Table = Table::new("message_dead_letters");
/// Messages waiting in agents' mailboxes, by `<agent id>/<lane>/<message id>`:
/// [`crate::service::Message`]; removed once answered or dead-lettered.
pub const MAILBOX: Table = Table::new("mailbox");
/// Each agent's last messages, answered or dead, by `<agent id>/<when, µs>/<message id>`:
/// [`crate::messaging::Sent`]; the newest 50 of each agent are kept, written in the background
/// by the node that delivers them (`messaging::history`).
pub const MESSAGE_HISTORY: Table = Table::new("message_history");
/// Swarm specs by id: [`crate::swarm::SwarmSpec`].
pub const SWARMS: Table = Table::new("swarms");
/// Swarm statuses by id: [`crate::swarm::SwarmStatus`]; written by the swarm's coordinator.
pub const SWARM_STATUS: Table = Table::new("swarm_status");
/// Swarm memory by `<swarm id>/<key>`: [`crate::swarm::memory::Entry`].
pub const SWARM_MEMORY: Table = Table::new("swarm_memory");
/// Swarm tasks by id: [`crate::swarm::SwarmTask`].
pub const SWARM_TASKS: Table = Table::new("swarm_tasks");
/// The open (RUNNING) swarm tasks by `<swarm id>/<task id>` (empty values), so a
/// coordinator reads its open tasks and not every swarm task kept.
pub const SWARM_OPEN_TASKS: Table = Table::new("swarm_open_tasks");
/// Sub-teams by `<parent swarm id>/<team id>`: the leader's agent id (UTF-8).
pub const SWARM_TEAMS: Table = Table::new("swarm_teams");

/// Where an entity lives when not where its id says: entity id →
/// [`crate::cluster::directory::Placement`] (node, epoch). Written when the cluster moves an
/// entity off a lost or leaving node; an id with no entry lives on the node it names.
pub const DIRECTORY: Table = Table::new("directory");

/// One page of the records of `table` after the cursor, in id order, from this node's replica
/// (every member's store has every member's records): `read` turns each entry into an item,
/// or `None` to leave it out (a filter); and whether more follow.
pub(crate) async fn page<T, F>(
    store: &Store,
    table: Table,
    after: Option<String>,
    first: usize,
    read: F,
) -> Result<(Vec<T>, bool), ApiError>
where
    T: Send + 'static,
    F: Fn(&View<'_>, &str, &[u8]) -> Result<Option<T>, StoreError> + Send + 'static,
{
    let mut page = store
        .view(move |v| {
            let mut out = Vec::new();
            v.scan(table, after.as_deref(), |id, bytes| {
                out.extend(read(v, id, bytes)?);
                Ok(out.len() <= first)
            })?;
            Ok(out)
        })
        .await?;
    let more = page.len() > first;
    page.truncate(first);
    Ok((page, more))
}

//! An operator's changes and decisions from the command line: an agent's spawn and lifecycle, the
//! tool calls held for approval, and alert deliveries.

use clap::Subcommand;
use serde_json::{json, Value};

use super::{agent_id, ask, list_or_get, print, print_gone, Client, Done, Failure, List, AGENTS};

/// `troupe agents`: the reads, and the lifecycle changes an operator makes.
#[derive(Subcommand, Clone)]
pub enum AgentsHow {
    #[command(flatten)]
    Read(List),
    /// Spawn one: `spawn upper --capability upper -- tr a-z A-Z` (an exec agent running the
    /// command for each task, the payload on its stdin), `--builtin echo`, or any kind from
    /// a SpawnAgentInput in JSON (`--file spec.json`, `-` for stdin).
    Spawn(SpawnArgs),
    /// Stop it: it takes no new tasks; running ones get the grace period, then go back to
    /// the queue.
    Stop {
        /// The agent (id or name).
        agent: String,
        /// At once: its running tasks go back to the queue without the grace period.
        #[arg(long)]
        now: bool,
    },
    /// Start a stopped or failed agent.
    Start {
        /// The agent (id or name).
        agent: String,
    },
    /// Stop it and start it again with its current spec.
    Restart {
        /// The agent (id or name).
        agent: String,
    },
    /// Hold it: it takes no new tasks and its processes are stopped (SIGSTOP).
    Pause {
        /// The agent (id or name).
        agent: String,
    },
    /// Let a paused agent go on: its processes continue (SIGCONT) and it takes tasks again.
    Resume {
        /// The agent (id or name).
        agent: String,
    },
    /// Stop it and forget it.
    Remove {
        /// The agent (id or name).
        agent: String,
    },
}

#[derive(clap::Args, Clone)]
pub struct SpawnArgs {
    /// Its name.
    #[arg(required_unless_present = "file")]
    name: Option<String>,
    /// What it can do (repeatable).
    #[arg(long = "capability")]
    capabilities: Vec<String>,
    /// One of Troupe's builtin behaviours (echo, sleep, fail, panic, counter) instead of a
    /// command.
    #[arg(long, conflicts_with = "command")]
    builtin: Option<String>,
    /// The member that runs it (`cluster status` lists them) [default: the answering node]
    #[arg(long)]
    node: Option<String>,
    /// A SpawnAgentInput in JSON (docs/agents.md), the whole spec: a file, or - for stdin.
    #[arg(long, conflicts_with_all = ["name", "capabilities", "builtin", "command", "node"])]
    file: Option<std::path::PathBuf>,
    /// The command the agent runs for each task, after `--`: its argv, split by no shell.
    #[arg(last = true)]
    command: Vec<String>,
}

impl SpawnArgs {
    /// The SpawnAgentInput these arguments say.
    fn input(self) -> Result<Value, Failure> {
        if let Some(file) = self.file {
            let text = match file.as_os_str() == "-" {
                true => std::io::read_to_string(std::io::stdin()),
                false => std::fs::read_to_string(&file),
            }
            .map_err(|e| Failure(2, format!("{}: {e}", file.display())))?;
            return serde_json::from_str(&text).map_err(|e| Failure(2, format!("{}: not JSON: {e}", file.display())));
        }
        let backend = match (self.builtin, self.command.is_empty()) {
            (Some(kind), _) => json!({ "builtin": { "kind": kind } }),
            (None, false) => json!({ "exec": { "command": self.command } }),
            (None, true) => {
                return Err(Failure(
                    2,
                    "say what the agent runs: a command after --, --builtin KIND, or --file SPEC.json".into(),
                ))
            }
        };
        let mut input = json!({ "name": self.name, "capabilities": self.capabilities, "backend": backend });
        if let Some(node) = self.node {
            input["node"] = json!(node);
        }
        Ok(input)
    }
}

/// `troupe alerts`: the deliveries of alerts, and a test through a channel.
#[derive(Subcommand, Clone)]
pub enum Alerts {
    /// The newest deliveries (`--failed`: those that reached nobody).
    List {
        #[arg(long)]
        failed: bool,
        #[arg(long, default_value_t = 50)]
        first: u32,
    },
    /// Send a test notice through a channel now, once.
    Test { channel: String },
}

#[derive(Subcommand, Clone)]
pub enum Approvals {
    /// The tool calls waiting for an operator, oldest first (`--all`: the decided ones too).
    List {
        /// The decided calls too (APPROVED, REJECTED; a timeout rejects).
        #[arg(long)]
        all: bool,
    },
    /// Lets a held call run: its task goes on (operator role).
    Approve {
        /// The approval's id (`approvals list`).
        id: String,
        /// Kept with the decision, for whoever reads it later.
        #[arg(long)]
        note: Option<String>,
    },
    /// Refuses a held call: the model is given the refusal as the call's result (operator role).
    Reject {
        /// The approval's id (`approvals list`).
        id: String,
        /// Why: the model reads it ("rejected by an operator: <reason>").
        #[arg(long)]
        reason: Option<String>,
    },
}

pub(super) async fn agents(client: &Client, how: AgentsHow) -> Done {
    let (mutation, agent) = match how {
        AgentsHow::Read(how) => return list_or_get(client, &AGENTS, how).await,
        AgentsHow::Spawn(spawn) => {
            let fields = AGENTS.fields.join(" ");
            let query = format!("mutation($input: SpawnAgentInput!) {{ spawnAgent(input: $input) {{ {fields} }} }}");
            let data = ask(client, &query, json!({ "input": spawn.input()? })).await?;
            print(client, AGENTS.fields, &json!([data["spawnAgent"]]));
            return Ok(());
        }
        AgentsHow::Stop { agent, now: true } => {
            let id = agent_id(client, &agent).await?;
            let fields = AGENTS.fields.join(" ");
            let query = format!("mutation($id: ID!) {{ stopAgent(id: $id, graceful: false) {{ {fields} }} }}");
            let data = ask(client, &query, json!({ "id": id })).await?;
            print(client, AGENTS.fields, &json!([data["stopAgent"]]));
            return Ok(());
        }
        AgentsHow::Stop { agent, now: false } => ("stopAgent", agent),
        AgentsHow::Start { agent } => ("startAgent", agent),
        AgentsHow::Restart { agent } => ("restartAgent", agent),
        AgentsHow::Pause { agent } => ("pauseAgent", agent),
        AgentsHow::Resume { agent } => ("resumeAgent", agent),
        AgentsHow::Remove { agent } => ("removeAgent", agent),
    };
    let id = agent_id(client, &agent).await?;
    let fields = AGENTS.fields.join(" ");
    let query = format!("mutation($id: ID!) {{ {mutation}(id: $id) {{ {fields} }} }}");
    let data = ask(client, &query, json!({ "id": id })).await?;
    if mutation == "removeAgent" {
        print_gone(client, AGENTS.fields, "removed agent", &data[mutation]);
    } else {
        print(client, AGENTS.fields, &json!([data[mutation]]));
    }
    Ok(())
}

pub(super) async fn alerts(client: &Client, what: Alerts) -> Done {
    let fields = [
        "id",
        "rule",
        "channel",
        "outcome",
        "attempts",
        "count",
        "summary",
        "lastError",
    ];
    let (query, variables, key) = match what {
        Alerts::List { failed, first } => (
            format!(
                "query($outcome: AlertDeliveryOutcome, $first: Int) {{ alertDeliveries(outcome: $outcome, first: $first) {{ {} }} }}",
                fields.join(" ")
            ),
            json!({ "outcome": failed.then_some("FAILED"), "first": first }),
            "alertDeliveries",
        ),
        Alerts::Test { channel } => (
            format!(
                "mutation($channel: String!) {{ sendTestAlert(channel: $channel) {{ {} }} }}",
                fields.join(" ")
            ),
            json!({ "channel": channel }),
            "sendTestAlert",
        ),
    };
    let data = ask(client, &query, variables).await?;
    let rows = rows_of(&data[key]);
    print(client, &fields, &rows);
    if key == "sendTestAlert" && rows[0]["outcome"] != "DELIVERED" {
        return Err(Failure(1, "the test alert was not delivered".into()));
    }
    Ok(())
}

pub(super) async fn approvals(client: &Client, what: Approvals) -> Done {
    // What the call would do (its arguments) and, once decided, by whom and why.
    let fields = [
        "id",
        "tool",
        "arguments",
        "agentId",
        "taskId",
        "reason",
        "state",
        "requestedAt",
        "decidedBy",
        "note",
    ];
    let (query, variables, key) = match what {
        Approvals::List { all } => (
            format!(
                "query($pending: Boolean!) {{ approvals(pending: $pending) {{ {} }} }}",
                fields.join(" ")
            ),
            json!({ "pending": !all }),
            "approvals",
        ),
        Approvals::Approve { id, note } => (
            format!(
                "mutation($id: ID!, $note: String) {{ approveCall(id: $id, note: $note) {{ {} }} }}",
                fields.join(" ")
            ),
            json!({ "id": id, "note": note }),
            "approveCall",
        ),
        Approvals::Reject { id, reason } => (
            format!(
                "mutation($id: ID!, $reason: String) {{ rejectCall(id: $id, reason: $reason) {{ {} }} }}",
                fields.join(" ")
            ),
            json!({ "id": id, "reason": reason }),
            "rejectCall",
        ),
    };
    let data = ask(client, &query, variables).await?;
    let rows = rows_of(&data[key]);
    print(client, &fields, &rows);
    Ok(())
}

/// A list answer as it is, one answer as a list of one.
fn rows_of(answer: &Value) -> Value {
    match answer {
        Value::Array(_) => answer.clone(),
        one => json!([one]),
    }
}

//! An operator's changes and decisions from the command line: an agent's lifecycle, the
//! tool calls held for approval, and alert deliveries.

use clap::Subcommand;
use serde_json::{json, Value};

use super::{agent_id, ask, list_or_get, print, Client, Done, Failure, List, AGENTS};

/// `troupe agents`: the reads, and the lifecycle changes an operator makes.
#[derive(Subcommand, Clone)]
pub enum AgentsHow {
    #[command(flatten)]
    Read(List),
    /// Stop it: it takes no new tasks; running ones get the grace period, then go back to
    /// the queue.
    Stop {
        agent: String,
    },
    /// Start a stopped or failed agent.
    Start {
        agent: String,
    },
    /// Stop it and start it again with its current spec.
    Restart {
        agent: String,
    },
    /// Hold it: it takes no new tasks and its processes are stopped (SIGSTOP).
    Pause {
        agent: String,
    },
    Resume {
        agent: String,
    },
    /// Stop it and forget it.
    Remove {
        agent: String,
    },
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
    /// The tool calls waiting for an operator.
    List,
    Approve {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    Reject {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

pub(super) async fn agents(client: &Client, how: AgentsHow) -> Done {
    let (mutation, agent) = match how {
        AgentsHow::Read(how) => return list_or_get(client, &AGENTS, how).await,
        AgentsHow::Stop { agent } => ("stopAgent", agent),
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
    print(client, AGENTS.fields, &json!([data[mutation]]));
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
    let fields = ["id", "tool", "agentId", "taskId", "reason", "state"];
    let (query, variables, key) = match what {
        Approvals::List => (
            format!("{{ approvals {{ {} }} }}", fields.join(" ")),
            json!({}),
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

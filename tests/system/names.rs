//! Names first: what a person reads names agents, tasks and swarm members by their names
//! (events as sentences, error texts, members' names), and an agent's page has its CPU and
//! memory over time.

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::support::swarms::{create, members, template};
use super::support::{expect_code, text, Deadline, Node, NodeOpts, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_read_as_sentences_errors_name_agents_and_members_have_short_names() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo").arg("--history-interval-ms", "100")).await?;
    let reviewer = node.spawn_process("reviewer", json!({}), json!({})).await?;

    // An event says who by name, and what happened, in a sentence.
    let q = "{ events(kinds: [\"AGENT_SPAWNED\"]) { subject subjectName subjectKind text } }";
    let events = node.gql_ok(q, json!({})).await?["events"].clone();
    let spawned = events
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["subject"] == json!(reviewer))
        .context("the spawn's event")?;
    ensure!(
        spawned["subjectName"] == "reviewer" && spawned["subjectKind"] == "AGENT",
        "{spawned}"
    );
    ensure!(spawned["text"] == "agent reviewer was spawned", "{spawned}");

    // Its processes' CPU and memory, sampled while it runs.
    let usage = "query($id: ID!) { agent(id: $id) { usageHistory(minutes: 5) { at cpuCores rssBytes } } }";
    let deadline = Deadline::after(WAIT, "two samples of the agent's usage");
    loop {
        let points = node.gql_ok(usage, json!({ "id": reviewer })).await?["agent"]["usageHistory"].clone();
        let list = points.as_array().context("usageHistory")?;
        ensure!(list.iter().all(|p| p["rssBytes"].as_i64() > Some(0)), "{points}");
        if list.iter().skip(1).any(|p| p["cpuCores"].is_number()) {
            break;
        }
        deadline.tick(&points).await?;
    }

    // An answer about an agent names it.
    node.act("stopAgent", &reviewer).await?;
    node.wait_agent_state(&reviewer, "STOPPED").await?;
    let submit = "mutation($a: ID!) { submitTask(input: { agentId: $a, payload: {} }) { id } }";
    let refused = node.gql(submit, json!({ "a": reviewer })).await?;
    expect_code(&refused, "CONFLICT")?;
    ensure!(refused.to_string().contains("agent reviewer is stopped"), "{refused}");

    // The counts by state, in one pass, agree with the filtered lists' counts.
    node.spawn_builtin("echo", &[]).await?;
    let q = "{ agentStateCounts { state count } stopped: agents(state: STOPPED) { totalCount } \
             running: agents(state: RUNNING) { totalCount } }";
    let counts = node.gql_ok(q, json!({})).await?;
    let of = |state: &str| {
        counts["agentStateCounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["state"] == state)
            .map_or(0, |c| c["count"].as_i64().unwrap_or(-1))
    };
    ensure!(of("STOPPED") == 1 && counts["stopped"]["totalCount"] == 1, "{counts}");
    ensure!(of("RUNNING") == 1 && counts["running"]["totalCount"] == 1, "{counts}");

    // A swarm's members are named from their template with a short suffix.
    let s = create(
        &node,
        json!({ "name": "team", "templates": [template("math", &["math"], 2, &[])] }),
    )
    .await?;
    for m in members(&s) {
        let name = m["name"].as_str().context("name")?;
        let suffix = name.strip_prefix("math-").context("the template's name first")?;
        ensure!(
            suffix.len() == 5 && suffix.chars().all(|c| c.is_ascii_hexdigit()),
            "{name}"
        );
    }
    let swarm = text(&s, "/id")?;
    let deadline = Deadline::after(WAIT, "the swarm's creation told by name");
    loop {
        let q = "{ events(kinds: [\"SWARM_CREATED\"]) { subject text } }";
        let events = node.gql_ok(q, json!({})).await?["events"].clone();
        let told = events
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["subject"] == json!(swarm));
        if let Some(e) = told {
            ensure!(e["text"] == "swarm team was created", "{e}");
            break;
        }
        deadline.tick(&events).await?;
    }
    Ok(())
}

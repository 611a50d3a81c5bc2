//! What the command line follows as it happens: `submit --wait` (the task's updates to its
//! end), `logs -f` (an agent's lines) and `events -f` (the cluster's events, as sentences).

use std::cell::{Cell, RefCell};
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use super::ws::follow;
use super::{agent_id, ask, by_name, for_people, print, Client, Done, Failure, Output, AGENTS, SWARMS, TASKS, VMS};

#[derive(Args, Clone)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("runs_on").required(true).args(["capability", "agent"])))]
pub struct SubmitArgs {
    /// Run on an agent with this capability.
    #[arg(long)]
    capability: Option<String>,
    /// Run on this agent (id or name).
    #[arg(long)]
    agent: Option<String>,
    /// The task's input, JSON (a bare word is taken as a string; text that starts as JSON
    /// does, with `{`, `[` or `"`, must be JSON).
    #[arg(long, default_value = "{}")]
    payload: String,
    /// Wait for the task to end and print its result; exits 1 if it did not succeed.
    #[arg(long)]
    wait: bool,
    /// With --wait, stop waiting after this long (`90`, `30s`, `5m`, `2h`) and exit 6; the
    /// task goes on. Without it, --wait waits for the task's end.
    #[arg(long, requires = "wait", value_parser = parse_wait)]
    timeout: Option<Duration>,
    /// How many attempts it may take [default: the node's, 3].
    #[arg(long)]
    max_attempts: Option<u32>,
    /// For an LLM agent: the conversation it keeps across the tasks that name it.
    #[arg(long)]
    session: Option<String>,
    /// For an LLM agent: the tokens (input and output) its loop may spend on this task.
    #[arg(long)]
    max_tokens: Option<u64>,
    /// For an LLM agent: the cost in US dollars it may spend, at the node's price table.
    #[arg(long)]
    max_cost_usd: Option<f64>,
}

/// A `--timeout`: seconds, or a number with `s`, `m` or `h`.
fn parse_wait(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{text}: give seconds, or a number with s, m or h (30s, 5m)")),
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_secs(n * seconds)),
        _ => Err(format!("{text}: give seconds, or a number with s, m or h (30s, 5m)")),
    }
}

#[derive(Args, Clone)]
pub struct LogsArgs {
    /// The agent (id or name).
    agent: String,
    /// Keep following new lines.
    #[arg(short, long)]
    follow: bool,
    /// How many of the last lines to print first.
    #[arg(long, default_value_t = 50)]
    tail: u32,
}

#[derive(Args, Clone)]
pub struct EventsArgs {
    /// Only these kinds (repeatable; `task_dead` is `TASK_DEAD`).
    #[arg(long = "kind")]
    kinds: Vec<String>,
    /// Keep following new events.
    #[arg(short, long)]
    follow: bool,
    /// How many of the last events to print first.
    #[arg(long, default_value_t = 20)]
    tail: u32,
    /// Only the events about this entity: an id, the name of an agent, swarm, host or VM, a
    /// host's name@node, or the end of a task's id as its name shows it ("2a5e1c").
    #[arg(long)]
    subject: Option<String>,
}

/// A `--payload`: JSON, or a bare word taken as a string. Text that starts as a JSON object,
/// array or string does must be one: a typo in it is refused (exit 2), not sent as text.
fn payload_of(text: &str) -> Result<Value, Failure> {
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(e) if text.trim_start().starts_with(['{', '[', '"']) => Err(Failure(
            2,
            format!("--payload {text}: not JSON: {e} (a bare word is taken as a string; quote text that starts with {{, [ or \")"),
        )),
        Err(_) => Ok(Value::String(text.to_owned())),
    }
}

pub(super) async fn submit(client: &Client, s: SubmitArgs) -> Done {
    let payload = payload_of(&s.payload)?;
    let agent = match &s.agent {
        Some(agent) => Some(agent_id(client, agent).await?),
        None => None,
    };
    let input = json!({
        "capability": s.capability,
        "agentId": agent,
        "payload": payload,
        "maxAttempts": s.max_attempts,
        "session": s.session,
        "maxTokens": s.max_tokens,
        "maxCostUsd": s.max_cost_usd,
    });
    let query = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id state } }";
    let task = ask(client, query, json!({ "input": input })).await?["submitTask"].clone();
    let id = task["id"].as_str().unwrap_or_default().to_owned();
    if !s.wait {
        print(client, &["id", "state"], &json!([task]));
        return Ok(());
    }
    // Followed by its updates, which end with its last state.
    let query = "subscription($id: ID!) { taskUpdates(id: $id) { id state result error } }";
    let last = RefCell::new(task);
    let followed = follow(
        client,
        query,
        || json!({ "id": id }),
        |data| {
            *last.borrow_mut() = data["taskUpdates"].clone();
            Ok(())
        },
    );
    match s.timeout {
        None => followed.await?,
        Some(timeout) => match tokio::time::timeout(timeout, followed).await {
            Ok(followed) => followed?,
            Err(_) => {
                let state = last.borrow()["state"].as_str().unwrap_or("unknown").to_owned();
                return Err(Failure(
                    6,
                    format!(
                        "task {id} is still {state} after {}s; it goes on (troupe tasks get {id})",
                        timeout.as_secs()
                    ),
                ));
            }
        },
    }
    let last = last.into_inner();
    print(client, &["id", "state", "result", "error"], &json!([last]));
    match last["state"].as_str() {
        Some("SUCCEEDED") => Ok(()),
        state => Err(Failure(1, format!("task {id} ended {}", state.unwrap_or("unknown")))),
    }
}

pub(super) async fn logs(client: &Client, l: LogsArgs) -> Done {
    let id = agent_id(client, &l.agent).await?;
    let query = "query($id: ID!, $limit: Int) { agentLogs(id: $id, limit: $limit) { seq at stream line taskId } }";
    let lines = ask(client, query, json!({ "id": id, "limit": l.tail })).await?["agentLogs"].clone();
    let show = |line: &Value| match client.output {
        Output::Json | Output::Jsonl => outln!("{line}"),
        Output::Name => outln!("{}", line["line"].as_str().unwrap_or("")),
        Output::Table => outln!(
            "{} {:<6} {}",
            for_people(line["at"].as_str().unwrap_or("")),
            line["stream"].as_str().unwrap_or(""),
            line["line"].as_str().unwrap_or("")
        ),
    };
    let lines = lines.as_array().cloned().unwrap_or_default();
    if !l.follow {
        shown_all(client, &lines, show);
        return Ok(());
    }
    lines.iter().for_each(show);
    let after = lines.last().and_then(|l| l["seq"].as_u64()).unwrap_or(0);
    let after = Cell::new(after);
    let query =
        "subscription($id: ID!, $after: Int64) { agentLogLines(id: $id, after: $after) { seq at stream line taskId } }";
    follow(
        client,
        query,
        || json!({ "id": id, "after": after.get() }),
        |data| {
            let line = &data["agentLogLines"];
            show(line);
            after.set(line["seq"].as_u64().unwrap_or(after.get()));
            Ok(())
        },
    )
    .await
}

/// What was read, when nothing follows: one pretty JSON array for `-o json`, else each
/// row as `show` has it. (What follows comes an object a line, as it happens.)
fn shown_all(client: &Client, rows: &[Value], show: impl Fn(&Value)) {
    match client.output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(rows).unwrap_or_default()),
        _ => rows.iter().for_each(show),
    }
}

/// The id of the entity `who` names: a host by id, name or `name@node` (as the node resolves
/// it: a name several nodes' hosts share is refused, naming each), an agent, swarm or VM by
/// name, a task by the end of its id, or `who` itself (an id, or a subject that is no entity,
/// such as a member's name, or an entity removed since: `None` then).
async fn subject_of(client: &Client, who: &str) -> Result<Option<String>, Failure> {
    let host = ask(client, "query($id: ID!) { host(id: $id) { id } }", json!({ "id": who })).await?;
    if let Some(id) = host["host"]["id"].as_str() {
        return Ok(Some(id.to_owned()));
    }
    if !who.contains('@') {
        // A task by the end of its id, as `tasks get` finds it (read last: it lists them).
        let tail = who.len() >= 4 && who.chars().all(|c| c.is_ascii_hexdigit());
        for kind in [&AGENTS, &SWARMS, &VMS].into_iter().chain(tail.then_some(&TASKS)) {
            if let Some(id) = by_name(client, kind, who).await?["id"].as_str() {
                return Ok(Some(id.to_owned()));
            }
        }
    }
    // An id (`<uuid>@<node>`) is taken as it is; a word that names nothing now is too, but
    // said to be one when it finds no event.
    Ok(who.contains('@').then(|| who.to_owned()))
}

/// What `events` says on stderr when its filters found nothing, so that a typo does not
/// read as a quiet cluster: the filters, and a subject that names nothing now.
fn none_found(kinds: &[String], who: Option<&str>, named: bool) -> String {
    let mut said = "no events found".to_owned();
    if !kinds.is_empty() {
        said += &format!(" of kind {}", kinds.join(", "));
    }
    if let Some(who) = who {
        said += &format!(" about {who}");
        if !named {
            said +=
                &format!(" ({who} names no agent, swarm, host, VM or task now: one removed since is found by its id)");
        }
    }
    said
}

pub(super) async fn events(client: &Client, mut e: EventsArgs) -> Done {
    // Kinds are upper case: `task_dead` is meant as `TASK_DEAD`.
    e.kinds.iter_mut().for_each(|k| *k = k.to_ascii_uppercase());
    let kinds = (!e.kinds.is_empty()).then_some(&e.kinds);
    let (subject, named) = match &e.subject {
        Some(who) => match subject_of(client, who).await? {
            Some(id) => (Some(id), true),
            None => (Some(who.clone()), false),
        },
        None => (None, true),
    };
    // For people: the event as a sentence, its subject by name.
    let show = |event: &Value| match client.output {
        Output::Json | Output::Jsonl => outln!("{event}"),
        Output::Name => outln!("{}", event["seq"]),
        Output::Table => outln!(
            "{:>8} {} {:<22} {}",
            event["seq"],
            for_people(event["at"].as_str().unwrap_or("")),
            event["kind"].as_str().unwrap_or(""),
            event["text"].as_str().unwrap_or("")
        ),
    };
    let fields = "seq kind subject subjectName at text data";
    // The newest `tail` of these kinds, and where the log was when they were read.
    let query = format!(
        "query($kinds: [String!], $subject: ID, $last: Int) {{ node {{ lastSeq }} \
         events(kinds: $kinds, subject: $subject, last: $last) {{ {fields} }} }}"
    );
    let data = ask(
        client,
        &query,
        json!({ "kinds": kinds, "subject": subject, "last": e.tail }),
    )
    .await?;
    let events = data["events"].as_array().cloned().unwrap_or_default();
    if events.is_empty() && (kinds.is_some() || subject.is_some()) {
        eprintln!("troupe: {}", none_found(&e.kinds, e.subject.as_deref(), named));
    }
    if !e.follow {
        shown_all(client, &events, show);
        return Ok(());
    }
    events.iter().for_each(show);
    let shown = events.last().and_then(|e| e["seq"].as_u64()).unwrap_or(0);
    let after = Cell::new(shown.max(data["node"]["lastSeq"].as_u64().unwrap_or(0)));
    let query = format!(
        "subscription($after: Int64, $kinds: [String!], $subject: ID) {{ \
         events(after: $after, kinds: $kinds, subject: $subject) {{ {fields} }} }}"
    );
    follow(
        client,
        &query,
        || json!({ "after": after.get(), "kinds": kinds, "subject": subject }),
        |data| {
            let event = &data["events"];
            show(event);
            after.set(event["seq"].as_u64().unwrap_or(after.get()));
            Ok(())
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_that_filters_found_none_of_say_so_and_name_a_subject_that_names_nothing() {
        assert_eq!(none_found(&["NOPE".into()], None, true), "no events found of kind NOPE");
        assert_eq!(
            none_found(&[], Some("ghost"), false),
            "no events found about ghost (ghost names no agent, swarm, host, VM or task now: one removed since is found by its id)"
        );
    }

    #[test]
    fn a_payload_that_starts_as_json_does_must_be_json_and_a_bare_word_is_a_string() {
        assert_eq!(payload_of("{\"a\": 1}").ok(), Some(json!({ "a": 1 })));
        assert_eq!(payload_of("12").ok(), Some(json!(12)));
        assert_eq!(payload_of("hello").ok(), Some(json!("hello")));
        assert_eq!(payload_of("hello world").ok(), Some(json!("hello world")));
        for typo in ["{bad json", " [1, 2", "\"unclosed"] {
            let Err(Failure(code, message)) = payload_of(typo) else {
                panic!("{typo} was taken");
            };
            assert_eq!(code, 2, "{message}");
            assert!(message.contains("not JSON"), "{message}");
        }
    }
}

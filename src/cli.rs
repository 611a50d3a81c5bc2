//! The command line that speaks to a node's GraphQL API, as a client does: `troupe agents`,
//! `tasks`, `swarms`, `hosts`, `vms`, `approvals`, `alerts`, `cluster`, `experiments`,
//! `submit`, `logs`, `events`, `context`. Here: the client, lists and gets (by id or name) and
//! the output; an agent's lifecycle, approvals and alerts in `cli/act.rs`; what an operator
//! does to tasks, swarms, hosts and VMs in `cli/ops.rs`; the cluster and experiments in
//! `cli/cluster.rs`; what follows as it happens in `cli/follow.rs`. Tables for people,
//! `-o json`, `-o jsonl` and `-o name` for scripts. The node is `--url` (or `TROUPE_URL`),
//! else the context's (`cli/context.rs`); the token `--token` (or `TROUPE_TOKEN`), else the
//! context's token file, else the admin token in `--data-dir`.
//!
//! Exit codes: 0 done; 1 the API refused (its code printed); 2 a usage error (clap's);
//! 3 not found; 4 not allowed (no token, a bad one, a role too weak: `FORBIDDEN` of any
//! cause, fault injection off included); 5 the node could not be reached.

/// `println!` for the answer on stdout: when what reads it went away (`troupe events | head
/// -3`) the command ends there by SIGPIPE, quietly, as Unix tools do (see [`print_out`]).
macro_rules! outln {
    () => {
        $crate::cli::print_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::print_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod act;
mod cluster;
mod context;
mod follow;
mod kinds;
mod ops;
mod ws;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use act::{agents, alerts, approvals};
pub use act::{AgentsHow, Alerts, Approvals};
use clap::{Args, Subcommand, ValueEnum};
pub use cluster::{Cluster, Experiments};
pub use context::Contexts;
pub use follow::{EventsArgs, LogsArgs, SubmitArgs};
use kinds::{agent_id, by_name, list_or_get, rows_of, Kind, AGENTS, HOSTS, SWARMS, TASKS, VMS};
pub use ops::{HostsHow, SwarmsHow, TasksHow, VmsHow};
use serde_json::{json, Value};

/// Writes to stdout. The process ignores SIGPIPE, as Rust has it, so a node that hangs up
/// on a request is an error the command reports (exit 5), never a silent death by signal;
/// stdout's reader gone is the one case that ends the command by SIGPIPE, as Unix tools
/// end, with nothing on stderr (`println!` panicked there).
pub(crate) fn print_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            crate::end_by_sigpipe();
        }
        eprintln!("troupe: cannot write the answer: {e}");
        std::process::exit(1);
    }
}

/// Where the node is and who asks.
#[derive(Args, Clone)]
pub struct Client {
    /// The node's gateway [default: the context's, else http://127.0.0.1:8080].
    #[arg(long, env = "TROUPE_URL", global = true)]
    url: Option<String>,
    /// A context of the command line's file (`troupe context list`) [default: its current].
    #[arg(long, env = "TROUPE_CONTEXT", global = true)]
    context: Option<String>,
    /// An API token [default: the admin token in --data-dir].
    #[arg(long, env = "TROUPE_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Where to find admin.token when no token is given.
    #[arg(long, env = "TROUPE_DATA_DIR", default_value = "./troupe-data", global = true)]
    data_dir: PathBuf,
    /// How to print what the node answers.
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    output: Output,
}

#[derive(ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns, for people.
    Table,
    /// One JSON array (or object), pretty-printed; what follows (`-f`), an object a line.
    Json,
    /// One JSON object a line, for a pipe (`jq -c`, `grep`).
    Jsonl,
    /// Each row's id alone, a line each (`xargs -n1 troupe agents stop`).
    Name,
}

#[derive(Subcommand, Clone)]
pub enum List {
    /// Every one (read 500 a request), or the first `--first`.
    List {
        /// Only the first this many.
        #[arg(long)]
        first: Option<usize>,
    },
    /// One, by id or name (a task by the end of its id, as its name shows it: "2a5e1c"; a
    /// task's result besides).
    Get {
        /// Its id or name.
        id: String,
    },
}

/// A failure, with the exit code it means.
struct Failure(u8, String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(1, format!("{e:#}"))
    }
}

type Done = Result<(), Failure>;

/// The node's answer to one GraphQL request, or why there is none.
async fn ask(client: &Client, query: &str, variables: Value) -> Result<Value, Failure> {
    let url = format!("{}/graphql", base_url(client)?.trim_end_matches('/'));
    let token = token(client)?;
    let response = troupe_actors::agent::http_client()
        .post(&url)
        .bearer_auth(token)
        .timeout(Duration::from_secs(60))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .map_err(|e| {
            Failure(
                5,
                format!("cannot reach {url}: {}", troupe_runtime::causes::said_with_causes(&e)),
            )
        })?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| Failure(5, format!("{url} answered HTTP {status} with no JSON: {e}")))?;
    if let Some(error) = body["errors"].as_array().and_then(|e| e.first()) {
        let code = error["extensions"]["code"].as_str().unwrap_or("ERROR");
        let exit = match code {
            "NOT_FOUND" => 3,
            "UNAUTHENTICATED" | "FORBIDDEN" => 4,
            _ => 1,
        };
        return Err(Failure(
            exit,
            format!("{code}: {}", error["message"].as_str().unwrap_or("")),
        ));
    }
    // What the node says beside its answer (a task queued for a capability no agent has):
    // on stderr, so a pipe reading stdout gets the answer alone.
    for warning in body["extensions"]["warnings"].as_array().into_iter().flatten() {
        eprintln!(
            "warning: {}: {}",
            warning["code"].as_str().unwrap_or("WARNING"),
            warning["message"].as_str().unwrap_or("")
        );
    }
    Ok(body["data"].clone())
}

/// The node's URL: the flag (or `TROUPE_URL`), else the context's, else the default.
fn base_url(client: &Client) -> Result<String, Failure> {
    if let Some(url) = &client.url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Failure(
                2,
                format!("--url {url:?} is not a node's address: give http://host:port (or https://)"),
            ));
        }
        return Ok(url.clone());
    }
    let context = context::chosen(client.context.as_deref())?;
    Ok(context.map_or_else(|| "http://127.0.0.1:8080".to_owned(), |c| c.url))
}

fn token(client: &Client) -> Result<String, Failure> {
    if let Some(token) = &client.token {
        return Ok(token.clone());
    }
    // The context's token goes to the context's node only: with --url, only when that is
    // the context's URL (a token is never sent to another node than the one it was kept for).
    let context = context::chosen(client.context.as_deref())?;
    let same_node = |c: &context::Context| {
        client
            .url
            .as_deref()
            .is_none_or(|url| url.trim_end_matches('/') == c.url.trim_end_matches('/'))
    };
    if let Some(context) = context.filter(same_node) {
        if let Some(file) = context.token_file {
            return std::fs::read_to_string(&file)
                .map(|t| t.trim().to_owned())
                .map_err(|e| Failure(4, format!("the context's token file {}: {e}", file.display())));
        }
    }
    let file = client.data_dir.join("admin.token");
    std::fs::read_to_string(&file)
        .map(|t| t.trim().to_owned())
        .map_err(|e| {
            Failure(
                4,
                format!(
                    "no token: give --token or TROUPE_TOKEN, or --data-dir of a node ({}: {e})",
                    file.display()
                ),
            )
        })
}

#[derive(Subcommand)]
pub enum Command {
    /// Agents: list, get (by id or name), spawn, stop, start, restart, pause, resume, remove.
    Agents {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        how: AgentsHow,
    },
    /// Tasks: list, get (by id or name), cancel, requeue.
    Tasks {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        how: TasksHow,
    },
    /// Swarms: list, get (by id or name), scale, destroy.
    Swarms {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        how: SwarmsHow,
    },
    /// Hosts: list, get (by id or name), drain, maintenance.
    Hosts {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        how: HostsHow,
    },
    /// VMs: list, get (by id or name), start, stop, reboot, pause, resume, migrate, delete.
    Vms {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        how: VmsHow,
    },
    /// LLM agents' tool calls held for an operator: list, approve, reject.
    Approvals {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        what: Approvals,
    },
    /// Alert deliveries: list (--failed), test a channel.
    Alerts {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        what: Alerts,
    },
    /// The cluster: status (leader, members), leave, forget, role.
    Cluster {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        what: Cluster,
    },
    /// Fault experiments: list, get, start (from JSON), stop, halt.
    Experiments {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        what: Experiments,
    },
    /// The command line's contexts (named nodes): list, use, set.
    Context {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        what: Contexts,
    },
    /// Submit a task (and, with --wait, wait for its result).
    Submit {
        #[command(flatten)]
        client: Client,
        #[command(flatten)]
        submit: SubmitArgs,
    },
    /// An exec, process or mcp agent's lines (an mcp server's stderr) (-f: and the ones it
    /// writes next).
    Logs {
        #[command(flatten)]
        client: Client,
        #[command(flatten)]
        logs: LogsArgs,
    },
    /// The cluster's last events (-f: and the next ones).
    Events {
        #[command(flatten)]
        client: Client,
        #[command(flatten)]
        events: EventsArgs,
    },
}

/// Runs one client command; what to exit with.
pub async fn run(command: Command) -> ExitCode {
    let done = match command {
        Command::Agents { client, how } => agents(&client, how).await,
        Command::Alerts { client, what } => alerts(&client, what).await,
        Command::Tasks { client, how } => ops::tasks(&client, how).await,
        Command::Swarms { client, how } => ops::swarms(&client, how).await,
        Command::Hosts { client, how } => ops::hosts(&client, how).await,
        Command::Vms { client, how } => ops::vms(&client, how).await,
        Command::Approvals { client, what } => approvals(&client, what).await,
        Command::Cluster { client, what } => cluster::cluster(&client, what).await,
        Command::Experiments { client, what } => cluster::experiments(&client, what).await,
        Command::Context { client, what } => context::contexts(&client, what),
        Command::Submit { client, submit } => follow::submit(&client, submit).await,
        Command::Logs { client, logs } => follow::logs(&client, logs).await,
        Command::Events { client, events } => follow::events(&client, events).await,
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, why)) => {
            eprintln!("troupe: {why}");
            ExitCode::from(code)
        }
    }
}

/// What a command that removed something prints: for people a sentence ("agent q removed"),
/// since the state the API answered with is the one it had before it went; for scripts the
/// answer as it is.
fn print_gone(client: &Client, fields: &[&str], what: &str, done: &Value) {
    match client.output {
        Output::Table => {
            let name = done["name"].as_str().filter(|n| !n.is_empty());
            let id = done["id"].as_str().unwrap_or_default();
            match name {
                Some(name) => outln!("{what} {name} ({id})"),
                None => outln!("{what} {id}"),
            }
        }
        _ => print(client, fields, &json!([done])),
    }
}

/// A table's cell: a time (RFC 3339, to the nanosecond, as GraphQL gives it) to the
/// millisecond in UTC, "2026-11-27 19:45:15.596Z"; anything else as it is.
fn for_people(text: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(at) => at
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S%.3fZ")
            .to_string(),
        Err(_) => text.to_owned(),
    }
}

/// Prints `rows` as a table of `fields`, or as JSON.
fn print(client: &Client, fields: &[&str], rows: &Value) {
    let each = || rows.as_array().into_iter().flatten();
    match client.output {
        Output::Json => return outln!("{}", serde_json::to_string_pretty(rows).unwrap_or_default()),
        Output::Jsonl => return each().for_each(|r| outln!("{r}")),
        Output::Name => {
            let key = if fields.contains(&"id") {
                "id"
            } else {
                fields.first().copied().unwrap_or("id")
            };
            return each().filter_map(|r| r[key].as_str()).for_each(|id| outln!("{id}"));
        }
        Output::Table => {}
    }
    let cell = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => for_people(s),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = rows
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| fields.iter().map(|f| cell(&r[*f])).collect())
        .collect();
    let headers: Vec<String> = fields.iter().map(|f| header(f)).collect();
    let widths: Vec<usize> = (0..fields.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(&headers).chain(&rows) {
        let line: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        outln!("{}", line.join("  ").trim_end());
    }
}

/// A table's header for the field `field`: its words in capitals, joined by `_`
/// ("requestedAt" is REQUESTED_AT: it read REQUESTEDAT).
fn header(field: &str) -> String {
    let mut out = String::with_capacity(field.len() + 4);
    for c in field.chars() {
        if c.is_uppercase() && !out.is_empty() {
            out.push('_');
        }
        out.extend(c.to_uppercase());
    }
    out
}

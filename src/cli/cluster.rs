//! The cluster and its fault experiments from the command line: `troupe cluster` (who leads,
//! the members, and the changes an admin makes to them), `troupe experiments` (list, get,
//! start from a JSON file, follow, stop, and the kill switch).

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::ws::follow;
use super::{ask, print, Client, Done, Failure, Output};

/// `troupe cluster`: the members as the node's replica sees them, and membership changes.
#[derive(Subcommand, Clone)]
pub enum Cluster {
    /// Who leads, the term and commit index, and every member.
    Status,
    /// Drain a member and take it out of the cluster (what it runs moves).
    Leave { node: String },
    /// Forget a member that is DOWN and will not return.
    Forget { node: String },
    /// Make a member a voter or a learner.
    Role {
        node: String,
        /// voter or learner (VOTER and LEARNER, as GraphQL says them, too).
        #[arg(ignore_case = true)]
        role: Role,
    },
}

#[derive(ValueEnum, Clone, Copy)]
pub enum Role {
    Voter,
    Learner,
}

const MEMBER: &[&str] = &[
    "name",
    "state",
    "role",
    "address",
    "lag",
    "appliedLag",
    "working",
    "lastHeartbeat",
];

pub(super) async fn cluster(client: &Client, what: Cluster) -> Done {
    let fields = MEMBER.join(" ");
    let (mutation, node, role) = match what {
        Cluster::Status => {
            let query = format!("{{ cluster {{ leader term commitIndex members {{ {fields} }} }} }}");
            let view = ask(client, &query, json!({})).await?["cluster"].clone();
            if client.output == Output::Table {
                outln!(
                    "leader {}  term {}  commit index {}\n",
                    view["leader"]
                        .as_str()
                        .unwrap_or("none (an election, or this node is cut off)"),
                    view["term"],
                    view["commitIndex"]
                );
                print(client, MEMBER, &view["members"]);
            } else if client.output == Output::Json {
                print(client, MEMBER, &view);
            } else {
                print(client, &["name"], &view["members"]);
            }
            return Ok(());
        }
        Cluster::Leave { node } => ("leaveCluster(node: $node)", node, None),
        Cluster::Forget { node } => ("forgetMember(node: $node)", node, None),
        Cluster::Role { node, role } => (
            "setMemberRole(node: $node, role: $role)",
            node,
            Some(match role {
                Role::Voter => "VOTER",
                Role::Learner => "LEARNER",
            }),
        ),
    };
    let head = match role {
        Some(_) => "mutation($node: String!, $role: MemberRole!)",
        None => "mutation($node: String!)",
    };
    let query = format!("{head} {{ member: {mutation} {{ {fields} }} }}");
    let member = ask(client, &query, json!({ "node": node, "role": role })).await?["member"].clone();
    print(client, MEMBER, &json!([member]));
    Ok(())
}

/// `troupe experiments`: fault experiments.
#[derive(Subcommand, Clone)]
pub enum Experiments {
    /// Every node's experiments, newest first.
    List,
    /// One, with its injections and, once it ended, its report.
    Get { id: String },
    /// Start one from a `StartExperimentInput` in JSON (`-` reads standard input).
    Start {
        file: PathBuf,
        /// Answer the targets and expected effects; inject nothing.
        #[arg(long)]
        dry_run: bool,
        /// Follow it to its end; exits 1 unless it PASSED.
        #[arg(long)]
        wait: bool,
    },
    /// End one now: its faults are reverted and it is judged.
    Stop {
        /// The experiment's id (`experiments list`).
        id: String,
    },
    /// The kill switch: revert every armed fault of every reachable node.
    Halt,
}

const EXPERIMENT: &str = "id name state seed startedAt finishedAt \
    injections { id action target targetName kind outcome timeToRecoverMs } \
    report { verdict reason injected recovered maxTimeToRecoverMs invariants { name ok detail } }";
const COLUMNS: &[&str] = &["id", "name", "state", "startedAt", "finishedAt"];
const INJECTION: &[&str] = &["action", "targetName", "kind", "outcome", "timeToRecoverMs"];

pub(super) async fn experiments(client: &Client, what: Experiments) -> Done {
    match what {
        Experiments::List => {
            let list = ask(client, &format!("{{ experiments {{ {EXPERIMENT} }} }}"), json!({})).await?;
            print(client, COLUMNS, &list["experiments"]);
            Ok(())
        }
        Experiments::Get { id } => {
            let query = format!("query($id: ID!) {{ experiment(id: $id) {{ {EXPERIMENT} }} }}");
            let found = ask(client, &query, json!({ "id": id })).await?["experiment"].clone();
            if found.is_null() {
                return Err(Failure(3, format!("no experiment {id}")));
            }
            show(client, &found);
            Ok(())
        }
        Experiments::Start { file, dry_run, wait } => start(client, file, dry_run, wait).await,
        Experiments::Stop { id } => {
            let query = format!("mutation($id: ID!) {{ stopExperiment(id: $id) {{ {EXPERIMENT} }} }}");
            let stopped = ask(client, &query, json!({ "id": id })).await?["stopExperiment"].clone();
            show(client, &stopped);
            Ok(())
        }
        Experiments::Halt => {
            let reverted = ask(client, "mutation { haltAllFaults }", json!({})).await?["haltAllFaults"].clone();
            print(client, &["reverted"], &json!([{ "reverted": reverted }]));
            Ok(())
        }
    }
}

async fn start(client: &Client, file: PathBuf, dry_run: bool, wait: bool) -> Done {
    let text = match file.as_os_str() == "-" {
        true => std::io::read_to_string(std::io::stdin()),
        false => std::fs::read_to_string(&file),
    }
    .map_err(|e| Failure(2, format!("{}: {e}", file.display())))?;
    let mut input: Value =
        serde_json::from_str(&text).map_err(|e| Failure(2, format!("{}: not JSON: {e}", file.display())))?;
    if dry_run {
        input["dryRun"] = json!(true);
    }
    let query =
        format!("mutation($input: StartExperimentInput!) {{ startExperiment(input: $input) {{ {EXPERIMENT} }} }}");
    let mut experiment = ask(client, &query, json!({ "input": input })).await?["startExperiment"].clone();
    if wait && !dry_run {
        let id = experiment["id"].clone();
        let query = format!("subscription($id: ID!) {{ experimentUpdates(id: $id) {{ {EXPERIMENT} }} }}");
        follow(
            client,
            &query,
            || json!({ "id": id }),
            |data| {
                experiment = data["experimentUpdates"].clone();
                if client.output == Output::Table {
                    outln!(
                        "{} {}",
                        experiment["name"].as_str().unwrap_or(""),
                        experiment["state"].as_str().unwrap_or("")
                    );
                }
                Ok(())
            },
        )
        .await?;
    }
    show(client, &experiment);
    match experiment["state"].as_str() {
        Some("FAILED" | "ABORTED") if wait => Err(Failure(
            1,
            format!(
                "experiment {} ended {}: {}",
                experiment["name"].as_str().unwrap_or(""),
                experiment["state"].as_str().unwrap_or(""),
                experiment["report"]["reason"].as_str().unwrap_or("")
            ),
        )),
        _ => Ok(()),
    }
}

/// An experiment: its line, then (for people) its injections and its report.
fn show(client: &Client, experiment: &Value) {
    if client.output != Output::Table {
        return print(client, COLUMNS, &json!([experiment]));
    }
    print(client, COLUMNS, &json!([experiment]));
    outln!();
    print(client, INJECTION, &experiment["injections"]);
    let report = &experiment["report"];
    if !report.is_null() {
        outln!(
            "\n{}: {} ({} injected, {} recovered)",
            report["verdict"].as_str().unwrap_or(""),
            report["reason"].as_str().unwrap_or(""),
            report["injected"],
            report["recovered"]
        );
        for i in report["invariants"].as_array().into_iter().flatten() {
            let mark = if i["ok"] == json!(true) { "ok  " } else { "FAIL" };
            outln!(
                "  {mark} {} {}",
                i["name"].as_str().unwrap_or(""),
                i["detail"].as_str().unwrap_or("")
            );
        }
    }
}

//! What an operator does to tasks, swarms, hosts and VMs from the command line, each named
//! by id or name: `tasks cancel|requeue`, `swarms scale|destroy`, `hosts drain|maintenance`,
//! `vms start|stop|reboot|pause|resume|migrate|delete`. Each prints the entity as the change
//! left it; one destroyed or deleted is said to be gone, for people.

use clap::Subcommand;
use serde_json::{json, Value};

use super::{
    ask, by_name, list_or_get, print, print_gone, rows_of, Client, Done, Failure, Kind, List, Output, HOSTS, SWARMS,
    TASKS, VMS,
};

#[derive(Subcommand, Clone)]
pub enum TasksHow {
    /// Every one (read 500 a request), or the first `--first`; `--state` and `--agent`
    /// narrow the list.
    List {
        /// Only the first this many.
        #[arg(long)]
        first: Option<usize>,
        /// Only those in this state (QUEUED, RUNNING, AWAITING_APPROVAL, SUCCEEDED, FAILED,
        /// CANCELLED, EXPIRED, DEPENDENCY_FAILED, DEAD; any case).
        #[arg(long)]
        state: Option<String>,
        /// Only those of this agent (id or name).
        #[arg(long)]
        agent: Option<String>,
    },
    /// One, by the end of its id as its name shows it ("2a5e1c") or its id; its result and
    /// why it waits besides.
    Get {
        /// Its id, or the end of it.
        id: String,
    },
    /// Cancel it (a running attempt is stopped).
    Cancel { task: String },
    /// Give a DEAD task (every attempt failed) another run.
    Requeue { task: String },
}

#[derive(Subcommand, Clone)]
pub enum SwarmsHow {
    #[command(flatten)]
    Read(List),
    /// Set its number of members.
    Scale {
        /// The swarm (id or name).
        swarm: String,
        /// How many members it has from now on.
        size: u32,
    },
    /// Stop its coordinator and members and remove it.
    Destroy {
        /// The swarm (id or name).
        swarm: String,
    },
}

#[derive(Subcommand, Clone)]
pub enum HostsHow {
    #[command(flatten)]
    Read(List),
    /// Move its VMs away, then put it in MAINTENANCE.
    Drain { host: String },
    /// Put an empty host in MAINTENANCE (`--off`: take it out).
    Maintenance {
        host: String,
        #[arg(long)]
        off: bool,
    },
}

#[derive(Subcommand, Clone)]
pub enum VmsHow {
    #[command(flatten)]
    Read(List),
    /// Create one: placed on a host with room (`--host` or `--node` to choose), started per
    /// its run policy.
    Create(Box<CreateVmArgs>),
    /// Start it (a HALTED VM becomes ALWAYS).
    Start {
        /// The VM (id or name).
        vm: String,
    },
    /// Ask the guest to shut down; destroy it if it has not within the node's
    /// `vm_stop_timeout_ms` (an ALWAYS or RERUN_ON_FAILURE VM becomes HALTED, so it stays
    /// stopped).
    Stop {
        /// The VM (id or name).
        vm: String,
    },
    /// Reboot a RUNNING VM.
    Reboot {
        /// The VM (id or name).
        vm: String,
    },
    /// Pause a RUNNING VM.
    Pause {
        /// The VM (id or name).
        vm: String,
    },
    /// Resume a PAUSED VM.
    Resume {
        /// The VM (id or name).
        vm: String,
    },
    /// Move it to another host (`--to`, else the placer's choice).
    Migrate {
        /// The VM (id or name).
        vm: String,
        /// The host to move it to (id, name or name@node).
        #[arg(long)]
        to: Option<String>,
    },
    /// Destroy and undefine its domain, and give its claim on the host back.
    Delete {
        /// The VM (id or name).
        vm: String,
    },
}

/// The id of the entity of `kind` that `who` names (its id or its name).
async fn id_of(client: &Client, kind: &Kind, who: &str) -> Result<String, Failure> {
    let query = format!("query($id: ID!) {{ {}(id: $id) {{ id }} }}", kind.one);
    let mut found = ask(client, &query, json!({ "id": who })).await?[kind.one].clone();
    if found.is_null() {
        found = by_name(client, kind, who).await?;
    }
    found["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Failure(3, format!("no {} {who}", kind.one)))
}

/// Runs `mutation(id: …, args)` on the entity `who` names and prints what it answers.
async fn act(client: &Client, kind: &Kind, mutation: &str, who: &str, args: &[(&str, &str, Value)]) -> Done {
    let done = acted(client, kind, mutation, who, args).await?;
    print(client, kind.fields, &json!([done]));
    Ok(())
}

/// Runs `mutation(id: …, args)` on the entity `who` names: what it answers.
async fn acted(
    client: &Client,
    kind: &Kind,
    mutation: &str,
    who: &str,
    args: &[(&str, &str, Value)],
) -> Result<Value, Failure> {
    let id = id_of(client, kind, who).await?;
    let mut variables = json!({ "id": id });
    let (mut declared, mut passed) = ("$id: ID!".to_owned(), "id: $id".to_owned());
    for (name, ty, value) in args {
        declared.push_str(&format!(", ${name}: {ty}"));
        passed.push_str(&format!(", {name}: ${name}"));
        variables[*name] = value.clone();
    }
    let fields = kind.fields.join(" ");
    let query = format!("mutation({declared}) {{ done: {mutation}({passed}) {{ {fields} }} }}");
    Ok(ask(client, &query, variables).await?["done"].take())
}

pub(super) async fn tasks(client: &Client, how: TasksHow) -> Done {
    match how {
        TasksHow::Get { id } => list_or_get(client, &TASKS, List::Get { id }).await,
        TasksHow::List { first, state, agent } => {
            let mut filter = Vec::new();
            if let Some(state) = state {
                filter.push(("state", "TaskState", json!(state.to_ascii_uppercase())));
            }
            if let Some(agent) = agent {
                filter.push(("agentId", "ID", json!(super::agent_id(client, &agent).await?)));
            }
            let rows = TASKS.all_of(client, first, &filter).await?;
            print(client, TASKS.fields, &Value::Array(rows));
            Ok(())
        }
        TasksHow::Cancel { task } => act(client, &TASKS, "cancelTask", &task, &[]).await,
        TasksHow::Requeue { task } => act(client, &TASKS, "requeueTask", &task, &[]).await,
    }
}

pub(super) async fn swarms(client: &Client, how: SwarmsHow) -> Done {
    match how {
        SwarmsHow::Read(how) => list_or_get(client, &SWARMS, how).await,
        SwarmsHow::Scale { swarm, size } => {
            act(client, &SWARMS, "scaleSwarm", &swarm, &[("size", "Int!", json!(size))]).await
        }
        SwarmsHow::Destroy { swarm } => {
            let done = acted(client, &SWARMS, "destroySwarm", &swarm, &[]).await?;
            print_gone(client, SWARMS.fields, "destroyed swarm", &done);
            Ok(())
        }
    }
}

pub(super) async fn hosts(client: &Client, how: HostsHow) -> Done {
    match how {
        HostsHow::Read(List::List { first }) => {
            let kind = Kind {
                fields: &["id", "name", "qualifiedName", "state", "node", "uri"],
                ..HOSTS
            };
            let mut rows = kind.all(client, first).await?;
            qualify_shared_names(&mut rows);
            print(client, HOSTS.fields, &Value::Array(rows));
            Ok(())
        }
        HostsHow::Read(how) => list_or_get(client, &HOSTS, how).await,
        HostsHow::Drain { host } => act(client, &HOSTS, "drainHost", &host, &[]).await,
        HostsHow::Maintenance { host, off } => {
            let enabled = [("enabled", "Boolean!", json!(!off))];
            act(client, &HOSTS, "setHostMaintenance", &host, &enabled).await
        }
    }
}

/// The hosts' names by id, as `hosts list` shows them.
struct HostNames(std::collections::HashMap<String, Value>);

impl HostNames {
    /// The name of the host `id` (the id itself when no host has it: one removed since).
    fn name(&self, id: &Value) -> Value {
        id.as_str()
            .and_then(|id| self.0.get(id))
            .cloned()
            .unwrap_or_else(|| id.clone())
    }
}

async fn host_names(client: &Client) -> Result<HostNames, Failure> {
    let data = ask(client, "{ hosts { id name qualifiedName } }", json!({})).await?;
    let mut rows = data["hosts"].as_array().cloned().unwrap_or_default();
    qualify_shared_names(&mut rows);
    Ok(HostNames(
        rows.into_iter()
            .filter_map(|r| Some((r["id"].as_str()?.to_owned(), r["name"].clone())))
            .collect(),
    ))
}

/// Every node's simulated hosts are `sim-1`…: where rows share a name, each is named as the
/// node that made it tells it apart (`sim-1@b`), the name `hosts get` and the events use.
fn qualify_shared_names(rows: &mut [Value]) {
    let shared: Vec<bool> = rows
        .iter()
        .map(|r| rows.iter().filter(|o| o["name"] == r["name"]).count() > 1)
        .collect();
    for (row, shared) in rows.iter_mut().zip(shared) {
        if shared && row["qualifiedName"].is_string() {
            row["name"] = row["qualifiedName"].clone();
        }
    }
}

/// `vms create`'s arguments: a CreateVmInput's usual fields.
#[derive(clap::Args, Clone)]
pub struct CreateVmArgs {
    /// Its name.
    name: String,
    /// Its virtual CPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Its memory, in MiB.
    #[arg(long = "memory-mib", default_value_t = 512)]
    memory_mib: u64,
    /// ALWAYS, RERUN_ON_FAILURE, MANUAL or HALTED (docs/vms.md).
    #[arg(long = "run-policy", default_value = "ALWAYS")]
    run_policy: String,
    /// The host to put it on (a name as `hosts list` shows it, or an id).
    #[arg(long)]
    host: Option<String>,
    /// The node whose hosts to place it on.
    #[arg(long)]
    node: Option<String>,
    /// A label, `key=value` (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// No two VMs of this group on one host.
    #[arg(long = "anti-affinity-group")]
    anti_affinity_group: Option<String>,
}

impl CreateVmArgs {
    fn input(self) -> Result<Value, Failure> {
        let labels = self
            .labels
            .iter()
            .map(|l| match l.split_once('=') {
                Some((key, value)) if !key.is_empty() => Ok(json!({ "key": key, "value": value })),
                _ => Err(Failure(2, format!("--label {l:?}: write it as key=value"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(json!({
            "name": self.name, "vcpus": self.vcpus, "memoryMiB": self.memory_mib,
            "runPolicy": self.run_policy.to_uppercase(), "host": self.host, "node": self.node,
            "labels": labels, "antiAffinityGroup": self.anti_affinity_group,
        }))
    }
}

pub(super) async fn vms(client: &Client, how: VmsHow) -> Done {
    let (mutation, vm) = match how {
        VmsHow::Create(args) => {
            let query = "mutation($input: CreateVmInput!) { createVm(input: $input) { id name state hostId } }";
            let data = ask(client, query, json!({ "input": args.input()? })).await?;
            return print_vms(client, vec![data["createVm"].clone()]).await;
        }
        VmsHow::Read(how) => return print_vms(client, rows_of(client, &VMS, how).await?).await,
        VmsHow::Migrate { vm, to } => return migrate(client, &vm, to).await,
        VmsHow::Start { vm } => ("startVm", vm),
        VmsHow::Stop { vm } => ("stopVm", vm),
        VmsHow::Reboot { vm } => ("rebootVm", vm),
        VmsHow::Pause { vm } => ("pauseVm", vm),
        VmsHow::Resume { vm } => ("resumeVm", vm),
        VmsHow::Delete { vm } => {
            let done = acted(client, &VMS, "deleteVm", &vm, &[]).await?;
            print_gone(client, VMS.fields, "deleted VM", &done);
            return Ok(());
        }
    };
    print_vms(client, vec![acted(client, &VMS, mutation, &vm, &[]).await?]).await
}

/// VMs with their hosts' names (as `hosts list` shows them) instead of their ids.
async fn print_vms(client: &Client, mut rows: Vec<Value>) -> Done {
    let names = host_names(client).await?;
    for row in &mut rows {
        row["host"] = names.name(&row["hostId"]);
    }
    print(client, &["id", "name", "state", "host"], &Value::Array(rows));
    Ok(())
}

/// A migration answers how it went, not the VM: its phase, hosts and error.
async fn migrate(client: &Client, vm: &str, to: Option<String>) -> Done {
    let id = id_of(client, &VMS, vm).await?;
    let target = match to {
        Some(host) => Some(id_of(client, &HOSTS, &host).await?),
        None => None,
    };
    let fields = ["id", "phase", "kind", "sourceHost", "targetHost", "error"];
    let query = format!(
        "mutation($id: ID!, $to: ID) {{ migrateVm(id: $id, targetHost: $to) {{ migration {{ {} }} }} }}",
        fields.join(" ")
    );
    let data = ask(client, &query, json!({ "id": id, "to": target })).await?;
    let migration = &data["migrateVm"]["migration"];
    // A table names the hosts; JSON keeps the API's ids, for scripts.
    let mut row = migration.clone();
    if matches!(client.output, Output::Table) {
        let names = host_names(client).await?;
        for end in ["sourceHost", "targetHost"] {
            row[end] = names.name(&migration[end]);
        }
    }
    print(client, &fields, &json!([row]));
    match migration["phase"].as_str() {
        Some("FAILED") => Err(Failure(
            1,
            format!("the migration failed: {}", migration["error"].as_str().unwrap_or("")),
        )),
        _ => Ok(()),
    }
}

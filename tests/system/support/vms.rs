//! Hosts and VMs through the gateway: creating, reading and waiting for them, and what
//! libvirt itself reports on each host.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::{text, Deadline, Node, WAIT};

pub const VM_FIELDS: &str = "id name state reason restarts lastError hostId host { name } \
    spec { runPolicy running domain vcpus memoryMiB } \
    migration { id phase kind sourceHost targetHost error reason }";

pub async fn create_vm(node: &Node, input: Value) -> Result<Value> {
    let q = format!("mutation($input: CreateVmInput!) {{ createVm(input: $input) {{ {VM_FIELDS} }} }}");
    Ok(node.gql_ok(&q, json!({ "input": input })).await?["createVm"].clone())
}

pub async fn vm(node: &Node, id: &str) -> Result<Value> {
    let q = format!("query($id: ID!) {{ vm(id: $id) {{ {VM_FIELDS} }} }}");
    Ok(node.gql_ok(&q, json!({ "id": id })).await?["vm"].clone())
}

pub async fn act(node: &Node, mutation: &str, id: &str) -> Result<Value> {
    let q = format!("mutation($id: ID!) {{ {mutation}(id: $id) {{ {VM_FIELDS} }} }}");
    node.gql(&q, json!({ "id": id })).await
}

pub async fn wait_vm(node: &Node, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Deadline::after(WAIT, format!("VM {id} to be {what}"));
    loop {
        let v = vm(node, id).await?;
        if pred(&v) {
            return Ok(v);
        }
        deadline.tick(&v).await?;
    }
}

pub async fn host_id(node: &Node, name: &str) -> Result<String> {
    let data = node
        .gql_ok("query($id: ID!) { host(id: $id) { id } }", json!({ "id": name }))
        .await?;
    text(&data, "/host/id")
}

pub async fn host(node: &Node, name: &str) -> Result<Value> {
    let q = "query($id: ID!) { host(id: $id) { id name state lastError \
             allocated { vcpus memoryMiB vcpuLimit memoryLimitMiB vms } \
             drain { total moved failed done } domains { name state reason memoryKiB } } }";
    Ok(node.gql_ok(q, json!({ "id": name })).await?["host"].clone())
}

pub async fn wait_host(node: &Node, name: &str, state: &str) -> Result<Value> {
    let deadline = Deadline::after(WAIT, format!("host {name} to be {state}"));
    loop {
        let h = node
            .gql_ok(
                "query($id: ID!) { host(id: $id) { state lastError } }",
                json!({ "id": name }),
            )
            .await?;
        if h["host"]["state"] == state {
            return Ok(h["host"].clone());
        }
        deadline.tick(&h).await?;
    }
}

/// Every domain libvirt reports on each host, by host name.
pub async fn domains(node: &Node) -> Result<BTreeMap<String, Vec<(String, String)>>> {
    let data = node
        .gql_ok("{ hosts { name domains { name state } } }", json!({}))
        .await?;
    let mut out = BTreeMap::new();
    for h in data["hosts"].as_array().context("hosts")? {
        let list = h["domains"]
            .as_array()
            .context("domains")?
            .iter()
            .map(|d| {
                (
                    d["name"].as_str().unwrap_or_default().to_owned(),
                    d["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        out.insert(h["name"].as_str().unwrap_or_default().to_owned(), list);
    }
    Ok(out)
}

/// How many copies of `domain` libvirt has, on which hosts, and how many of them run.
pub fn copies(all: &BTreeMap<String, Vec<(String, String)>>, domain: &str) -> (Vec<String>, usize) {
    let mut hosts = Vec::new();
    let mut running = 0;
    for (host, list) in all {
        for (name, state) in list {
            if name == domain {
                hosts.push(host.clone());
                running += usize::from(state == "RUNNING");
            }
        }
    }
    (hosts, running)
}

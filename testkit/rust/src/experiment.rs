//! A fault experiment bound to a block of a test.

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::node::Node;
use crate::until;

const FIELDS: &str = "id name state seed injections { id action target kind supervisor outcome effectiveAt \
    revertedAt recoveredAt timeToDetectMs timeToRecoverMs expected { id effect } observed { kind subject } } \
    report { verdict reason injected recovered maxTimeToRecoverMs invariants { name ok detail } unexpected { kind subject } }";

/// One fault: its action, the selector of its target, and its settings (docs/faults.md).
#[derive(Debug, Clone)]
pub struct Fault {
    action: String,
    target: Map<String, Value>,
    to: Option<Value>,
    params: Option<Value>,
}

impl Fault {
    /// A fault of this action (`CRASH`, `HANG`, `DISK_FULL`, ...), its target to be selected.
    pub fn new(action: &str) -> Self {
        Self {
            action: action.to_owned(),
            target: Map::new(),
            to: None,
            params: None,
        }
    }

    fn set(mut self, key: &str, value: Value) -> Self {
        self.target.insert(key.to_owned(), value);
        self
    }

    pub fn ids(self, ids: &[&str]) -> Self {
        self.set("ids", json!(ids))
    }

    pub fn kinds(self, kinds: &[&str]) -> Self {
        self.set("kinds", json!(kinds))
    }

    pub fn labels(self, labels: &[(&str, &str)]) -> Self {
        let labels: Vec<Value> = labels.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect();
        self.set("labels", json!(labels))
    }

    pub fn nodes(self, nodes: &[&str]) -> Self {
        self.set("nodes", json!(nodes))
    }

    pub fn under(self, supervisor: &str) -> Self {
        self.set("under", json!(supervisor))
    }

    /// ONE, ALL, FIXED or PERCENT (with `value`).
    pub fn mode(self, mode: &str, value: Option<u32>) -> Self {
        let with = self.set("mode", json!(mode));
        match value {
            Some(v) => with.set("value", json!(v)),
            None => with,
        }
    }

    /// The far side of a PARTITION.
    pub fn to_nodes(mut self, nodes: &[&str]) -> Self {
        self.to = Some(json!({ "nodes": nodes, "mode": "ALL" }));
        self
    }

    /// The action's settings (`{ "delayMs": 200 }`, `{ "tables": ["tasks"] }`, ...).
    pub fn params(mut self, params: Value) -> Self {
        self.params = Some(params);
        self
    }

    fn input(&self) -> Value {
        let mut f = json!({ "action": self.action, "target": Value::Object(self.target.clone()) });
        if let Some(to) = &self.to {
            f["to"] = to.clone();
        }
        if let Some(p) = &self.params {
            f["params"] = p.clone();
        }
        f
    }
}

/// A fault about to be bound to a block: its experiment's settings, then [`FaultBlock::run`].
#[derive(Debug)]
pub struct FaultBlock<'a> {
    node: &'a Node,
    input: Value,
    lease: Duration,
}

impl<'a> FaultBlock<'a> {
    pub(crate) fn new(node: &'a Node, fault: Fault) -> Self {
        let input =
            json!({ "name": format!("{} from a test", fault.action.to_lowercase()), "faults": [fault.input()] });
        Self {
            node,
            input,
            lease: Duration::from_secs(3),
        }
    }

    fn set(mut self, key: &str, value: Value) -> Self {
        self.input[key] = value;
        self
    }

    pub fn name(self, name: &str) -> Self {
        self.set("name", json!(name))
    }

    pub fn seed(self, seed: u64) -> Self {
        self.set("seed", json!(seed))
    }

    pub fn recover_within_ms(self, ms: u64) -> Self {
        self.set("recoverWithinMs", json!(ms))
    }

    pub fn allow_escalation(self) -> Self {
        self.set("allowEscalation", json!(true))
    }

    /// Repeats the fault `count` times, one round every `every_ms`.
    pub fn rounds(self, count: u32, every_ms: u64) -> Self {
        self.set("count", json!(count)).set("everyMs", json!(every_ms))
    }

    /// The lease the block renews while it runs [default: 3 s]: if the test dies, the node
    /// reverts everything within it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Starts the experiment, runs the block while renewing its lease, then stops it (also
    /// when the block fails) and waits for its report. The block's error, if any, comes
    /// first; else the experiment as it ended.
    pub async fn run<F, Fut, T>(self, block: F) -> Result<Experiment>
    where
        F: FnOnce(&'a Node) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let node = self.node;
        let mut input = self.input;
        input["leaseMs"] = json!(self.lease.as_millis() as u64);
        let q = format!("mutation($i: StartExperimentInput!) {{ startExperiment(input: $i) {{ {FIELDS} }} }}");
        let started = node.gql(&q, json!({ "i": input })).await?["startExperiment"].clone();
        let id = started["id"].as_str().context("no experiment id")?.to_owned();
        let renew = "mutation($id: ID!) { renewExperiment(id: $id) { state } }";
        let mut ticks = tokio::time::interval(self.lease / 3);
        ticks.tick().await;
        let ran = {
            let body = block(node);
            tokio::pin!(body);
            loop {
                tokio::select! {
                    out = &mut body => break out,
                    _ = ticks.tick() => {
                        // An ended experiment (the kill switch) is not renewed: not an error.
                        let _ = node.gql(renew, json!({ "id": id })).await;
                    }
                }
            }
        };
        let stop = "mutation($id: ID!) { stopExperiment(id: $id) { state } }";
        let _ = node.gql(stop, json!({ "id": id })).await;
        let read = format!("query($id: ID!) {{ experiment(id: $id) {{ {FIELDS} }} }}");
        let ended = until(&format!("experiment {id} to end"), || async {
            let e = node.gql(&read, json!({ "id": id })).await?["experiment"].clone();
            let state = e["state"].as_str().unwrap_or_default();
            Ok(["PASSED", "FAILED", "ABORTED"].contains(&state).then_some(e))
        })
        .await?;
        ran?;
        Ok(Experiment { started, ended })
    }
}

/// An experiment that ended: as it started (its picks and predictions) and as it ended.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub started: Value,
    pub ended: Value,
}

impl Experiment {
    pub fn state(&self) -> &str {
        self.ended["state"].as_str().unwrap_or_default()
    }

    pub fn report(&self) -> &Value {
        &self.ended["report"]
    }

    pub fn injections(&self) -> Vec<Value> {
        self.ended["injections"].as_array().cloned().unwrap_or_default()
    }

    /// Fails with the report's reason unless the experiment PASSED.
    pub fn assert_passed(&self) -> Result<()> {
        if self.state() != "PASSED" {
            bail!(
                "experiment {} {}: {}",
                self.ended["id"],
                self.state(),
                self.report()["reason"]
            );
        }
        Ok(())
    }
}

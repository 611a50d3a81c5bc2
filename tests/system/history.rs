//! A history checker: clients on all three nodes do compare-and-set on swarm memory keys and
//! submit tasks with idempotency keys while a nemesis kills (-9), freezes (SIGSTOP) or cuts
//! off one node at a time; then each key's history is checked for linearizability and the
//! acknowledged tasks for exactly-once (see `check`). Seeded: `TROUPE_HISTORY_SEED` replays a
//! run's choices (the seed is printed, and named in a failure); bounded in time.

mod check;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use self::check::{Cas, Committed, Outcome};
use super::failover::{three_nodes_up, wait_member_state};
use super::partitions::cut;
use super::support::{error_code, http_client, text, Deadline, Node, WAIT};

/// The swarm memory keys the clients write.
const KEYS: [&str; 3] = ["a", "b", "c"];
/// Compare-and-set clients per node (and one task client per node).
const CAS_CLIENTS_PER_NODE: usize = 2;
/// Faults, one after the other, each healed before the next.
const ROUNDS: usize = 4;
/// How long a client waits for an answer before it counts it as lost.
const ANSWER_WITHIN: Duration = Duration::from_secs(4);
/// How long a task client goes on sending a submission whose answers were lost, once the
/// nemesis is done and every node is back.
const RETRY_AFTER_THE_RUN: Duration = Duration::from_secs(30);

const CAS: &str = "mutation($id: ID!, $k: String!, $v: JSON!, $e: Int64!) { \
    setSwarmMemory(id: $id, key: $k, value: $v, expectVersion: $e) { version } }";
const SUBMIT: &str =
    "mutation($input: SubmitTaskInput!, $key: String) { submitTask(input: $input, idempotencyKey: $key) { id } }";

#[derive(Clone)]
struct Endpoint {
    url: String,
    token: String,
}

/// What a client's request came to.
enum Sent {
    /// The node is down (killed, not yet restarted): nothing was sent.
    Nowhere,
    /// Sent, and no answer came (a timeout, a refused or cut connection, a body that is not
    /// JSON such as a 408 or 503): it may or may not have happened.
    Lost,
    Answered(Value),
}

/// What the clients share: where each node answers now, the clock of the history, and the
/// flag that ends the run.
struct Run {
    client: reqwest::Client,
    endpoints: Mutex<Vec<Option<Endpoint>>>,
    origin: Instant,
    stop: AtomicBool,
    swarm: String,
    /// Compare-and-sets written and tasks acknowledged so far, all clients together.
    written: AtomicUsize,
    acked: AtomicUsize,
}

impl Run {
    fn now(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    fn set(&self, i: usize, node: Option<&Node>) {
        self.endpoints.lock().unwrap()[i] = node.map(|n| Endpoint {
            url: n.url("/graphql"),
            token: n.token.clone(),
        });
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    async fn ask(&self, node: usize, query: &str, variables: Value) -> Sent {
        let Some(at) = self.endpoints.lock().unwrap()[node].clone() else {
            return Sent::Nowhere;
        };
        let body = json!({ "query": query, "variables": variables });
        let sent = self
            .client
            .post(&at.url)
            .bearer_auth(&at.token)
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(resp) => match resp.json::<Value>().await {
                Ok(v) => Sent::Answered(v),
                Err(_) => Sent::Lost,
            },
            Err(_) => Sent::Lost,
        }
    }
}

/// A pause before trying again after a lost answer or a down node.
async fn pause() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// A compare-and-set's outcome from its answer; an answer that is none of a write, a
/// refusal or UNAVAILABLE is a finding.
fn outcome(body: &Value) -> Result<Outcome, String> {
    if let Some(v) = body.pointer("/data/setSwarmMemory/version").and_then(Value::as_u64) {
        return Ok(Outcome::Written(v));
    }
    let message = body
        .pointer("/errors/0/message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match error_code(body).as_deref() {
        Some("CONFLICT") => message
            .split("is at version ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|v| v.trim().parse().ok())
            .map(Outcome::Refused)
            .ok_or_else(|| format!("a refusal that names no version: {body}")),
        Some("UNAVAILABLE") => Ok(Outcome::Unknown),
        _ => Err(format!(
            "a compare-and-set answered neither a version nor UNAVAILABLE: {body}"
        )),
    }
}

/// A client of node `node` that sets random keys, each to the version after the one it last
/// learnt of, until the run stops: its operations, and the answers it did not expect.
async fn cas_client(run: Arc<Run>, node: usize, name: String, seed: u64) -> (Vec<Cas>, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut known: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut ops, mut odd) = (Vec::new(), Vec::new());
    let mut n = 0;
    while !run.stopped() {
        let key = KEYS[rng.random_range(0..KEYS.len())];
        let expect = known.get(key).copied().unwrap_or(0);
        n += 1;
        let value = format!("{name}-{n}");
        let start = run.now();
        let vars = json!({ "id": run.swarm, "k": key, "v": value, "e": expect });
        let sent = run.ask(node, CAS, vars).await;
        let end = run.now();
        let outcome = match sent {
            Sent::Nowhere => {
                pause().await;
                continue;
            }
            Sent::Lost => Outcome::Unknown,
            Sent::Answered(body) => outcome(&body).unwrap_or_else(|e| {
                odd.push(e);
                Outcome::Unknown
            }),
        };
        if matches!(outcome, Outcome::Written(_)) {
            run.written.fetch_add(1, Ordering::SeqCst);
        }
        match outcome {
            Outcome::Written(v) | Outcome::Refused(v) => {
                known.insert(key, v);
            }
            Outcome::Unknown => pause().await,
        }
        ops.push(Cas {
            key: key.to_owned(),
            expect,
            value,
            start,
            end,
            outcome,
        });
    }
    (ops, odd)
}

/// A client of node `node` that submits tasks, each with its own idempotency key, sending a
/// submission whose answer was lost again with the same key through any node until one is
/// answered (and every third acknowledged one once more, as a client unsure of its answer
/// would): the task ids answered for each key, and the answers it did not expect.
async fn task_client(
    run: Arc<Run>,
    node: usize,
    name: String,
    seed: u64,
) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut acked: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut odd = Vec::new();
    let mut n = 0;
    while !run.stopped() {
        n += 1;
        let key = format!("{name}-{n}");
        let input = json!({ "capability": "history", "payload": { "key": key } });
        let sends = if n % 3 == 0 { 2 } else { 1 };
        for _ in 0..sends {
            let mut through = node;
            let mut given_up_at: Option<Instant> = None;
            loop {
                let sent = run.ask(through, SUBMIT, json!({ "input": input, "key": key })).await;
                if let Sent::Answered(body) = &sent {
                    if let Some(id) = body.pointer("/data/submitTask/id").and_then(Value::as_str) {
                        acked.entry(key.clone()).or_default().push(id.to_owned());
                        run.acked.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    if error_code(body).as_deref() != Some("UNAVAILABLE") {
                        odd.push(format!("a submission answered neither a task nor UNAVAILABLE: {body}"));
                    }
                }
                if run.stopped() {
                    let since = *given_up_at.get_or_insert_with(Instant::now);
                    if since.elapsed() > RETRY_AFTER_THE_RUN {
                        odd.push(format!("submission {key} was never answered once every node was back"));
                        break;
                    }
                }
                through = rng.random_range(0..3);
                pause().await;
            }
        }
    }
    (acked, odd)
}

/// Kills, freezes or cuts off one node at a time, `ROUNDS` times, each for a random while
/// (past 4 s, the others declare it DOWN and move what it held), and waits for it to be UP
/// again before the next; what it did.
async fn nemesis(nodes: &mut [Node], run: &Run, rng: &mut StdRng) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for round in 0..ROUNDS {
        let at = rng.random_range(0..nodes.len());
        let hold = Duration::from_millis(rng.random_range(300..6000));
        let what = match rng.random_range(0..3) {
            0 => {
                run.set(at, None);
                nodes[at].kill9().await?;
                tokio::time::sleep(hold).await;
                nodes[at].restart().await?;
                run.set(at, Some(&nodes[at]));
                "killed (-9) and restarted"
            }
            1 => {
                nodes[at].freeze()?;
                tokio::time::sleep(hold).await;
                nodes[at].thaw()?;
                "frozen (SIGSTOP)"
            }
            _ => {
                cut(nodes, at, true)?;
                tokio::time::sleep(hold).await;
                cut(nodes, at, false)?;
                "cut off"
            }
        };
        done.push(format!("round {round}: {} {what} for {hold:?}", nodes[at].name));
        let other = (at + 1) % nodes.len();
        let name = nodes[at].name.clone();
        wait_member_state(&nodes[other], &name, "UP").await?;
    }
    Ok(done)
}

/// What `node` holds of the swarm's keys: the versions of its `SWARM_MEMORY_SET` events in
/// log order, and each key's value now.
async fn committed(node: &Node, swarm: &str) -> Result<BTreeMap<String, Committed>> {
    let mut held: BTreeMap<String, Committed> = KEYS.iter().map(|k| (k.to_string(), Committed::default())).collect();
    for e in node.events(&["SWARM_MEMORY_SET"]).await? {
        if e["subject"] != swarm {
            continue;
        }
        let key = text(&e, "/data/key")?;
        let version = e["data"]["version"].as_u64().context("an event without a version")?;
        held.entry(key).or_default().versions.push(version);
    }
    let q = "query($id: ID!) { swarm(id: $id) { memory(first: 1000) { key value } } }";
    let memory = node.gql_ok(q, json!({ "id": swarm })).await?;
    for entry in memory["swarm"]["memory"].as_array().context("no memory")? {
        let key = text(entry, "/key")?;
        held.entry(key).or_default().value = entry["value"].as_str().map(str::to_owned);
    }
    Ok(held)
}

/// The cluster's tasks of the run as `node` holds them: id → (idempotency key, state).
async fn tasks_held(node: &Node) -> Result<BTreeMap<String, (String, String)>> {
    let q = "query($after: String) { tasks(first: 500, after: $after) { \
             nodes { id capability payload state } pageInfo { hasNextPage endCursor } } }";
    let mut held = BTreeMap::new();
    let mut after = Value::Null;
    loop {
        let page = node.gql_ok(q, json!({ "after": after })).await?;
        for t in page["tasks"]["nodes"].as_array().context("no tasks")? {
            if t["capability"] == "history" {
                held.insert(text(t, "/id")?, (text(t, "/payload/key")?, text(t, "/state")?));
            }
        }
        if page["tasks"]["pageInfo"]["hasNextPage"] != true {
            return Ok(held);
        }
        after = page["tasks"]["pageInfo"]["endCursor"].clone();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_and_keyed_submits_under_kills_freezes_and_cuts_are_linearizable_and_exactly_once() -> Result<()>
{
    let seed = match std::env::var("TROUPE_HISTORY_SEED") {
        Ok(s) => s.parse().context("TROUPE_HISTORY_SEED is not a number")?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64,
    };
    eprintln!("history checker: TROUPE_HISTORY_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut nodes = three_nodes_up().await?;
    for node in &nodes {
        let id = node.spawn_builtin("echo", &["history"]).await?;
        node.wait_agent_state(&id, "RUNNING").await?;
    }
    let swarm = nodes[0]
        .gql_ok(
            "mutation { createSwarm(input: { name: \"history\", templates: [] }) { id } }",
            json!({}),
        )
        .await?;
    let run = Arc::new(Run {
        client: http_client().no_proxy().timeout(ANSWER_WITHIN).build()?,
        endpoints: Mutex::new(vec![None; nodes.len()]),
        origin: Instant::now(),
        stop: AtomicBool::new(false),
        swarm: text(&swarm, "/createSwarm/id")?,
        written: AtomicUsize::new(0),
        acked: AtomicUsize::new(0),
    });
    for (i, node) in nodes.iter().enumerate() {
        run.set(i, Some(node));
    }

    let mut cas = Vec::new();
    let mut submits = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for c in 0..CAS_CLIENTS_PER_NODE {
            let name = format!("{}{c}", node.name);
            cas.push(tokio::spawn(cas_client(run.clone(), i, name, rng.random())));
        }
        let name = format!("{}-task", node.name);
        submits.push(tokio::spawn(task_client(run.clone(), i, name, rng.random())));
    }
    let done = nemesis(&mut nodes, &run, &mut rng).await;
    if done.is_ok() {
        // The checks below need something to check. The rounds may have kept the swarm's
        // holder from its work for the whole run (seed 2020: frozen, then cut off twice, then
        // the leader cut off: no compare-and-set was written), so with every node back the
        // clients go on until each kind has made progress.
        let deadline = Deadline::after(
            WAIT,
            "a compare-and-set written and a task acknowledged once the nemesis stopped",
        );
        while run.written.load(Ordering::SeqCst) == 0 || run.acked.load(Ordering::SeqCst) == 0 {
            deadline
                .tick(format!(
                    "{} written, {} acknowledged",
                    run.written.load(Ordering::SeqCst),
                    run.acked.load(Ordering::SeqCst)
                ))
                .await?;
        }
    }
    run.stop.store(true, Ordering::SeqCst);
    let done = done?;
    let (mut ops, mut odd) = (Vec::new(), Vec::new());
    for client in cas {
        let (mine, unexpected) = client.await?;
        ops.extend(mine);
        odd.extend(unexpected);
    }
    let mut acked: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for client in submits {
        let (mine, unexpected) = client.await?;
        acked.extend(mine);
        odd.extend(unexpected);
    }
    let context = format!("TROUPE_HISTORY_SEED={seed}; nemesis: {done:?}");

    // Every node back and caught up: each holds the same keys and events.
    for node in &nodes {
        for m in ["alpha", "beta", "gamma"] {
            wait_member_state(node, m, "UP").await?;
        }
    }
    let deadline = Deadline::after(WAIT, "every node to hold the same keys");
    let held = loop {
        let seen = [
            committed(&nodes[0], &run.swarm).await?,
            committed(&nodes[1], &run.swarm).await?,
            committed(&nodes[2], &run.swarm).await?,
        ];
        let same = |a: &BTreeMap<String, Committed>, b: &BTreeMap<String, Committed>| {
            a.iter()
                .zip(b)
                .all(|((ka, a), (kb, b))| ka == kb && a.versions == b.versions && a.value == b.value)
        };
        if same(&seen[0], &seen[1]) && same(&seen[0], &seen[2]) {
            let [first, ..] = seen;
            break first;
        }
        deadline.tick(format!("{seen:?}")).await?;
    };
    // Every acknowledged task ends; one that does not is a finding, with what the log says
    // of it.
    let deadline = Deadline::after(WAIT, "every acknowledged task to end");
    let (tasks, stuck) = loop {
        let tasks = tasks_held(&nodes[0]).await?;
        let open: Vec<String> = acked
            .values()
            .filter_map(|ids| {
                tasks
                    .get(&ids[0])
                    .filter(|(_, state)| state == "QUEUED" || state == "RUNNING")
                    .map(|_| ids[0].clone())
            })
            .collect();
        if open.is_empty() || deadline.expired() {
            break (tasks, open);
        }
        deadline.tick(format!("{open:?}")).await?;
    };
    let mut successes: BTreeMap<String, usize> = BTreeMap::new();
    for e in nodes[0].events(&["TASK_SUCCEEDED"]).await? {
        *successes.entry(text(&e, "/subject")?).or_default() += 1;
    }

    let written = ops.iter().filter(|o| matches!(o.outcome, Outcome::Written(_))).count();
    let lost = ops.iter().filter(|o| o.outcome == Outcome::Unknown).count();
    eprintln!(
        "history checker: {} compare-and-sets ({written} written, {lost} without an answer), {} tasks acknowledged; {context}",
        ops.len(),
        acked.len()
    );
    let mut findings = odd;
    findings.extend(check::keys(&ops, &held));
    findings.extend(check::tasks(&acked, &tasks, &successes));
    // What the log says of each task that succeeded more than once or never ended, and of
    // the moves and members around them.
    let twice: Vec<&String> = successes
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .chain(&stuck)
        .collect();
    if !twice.is_empty() {
        for e in nodes[0].events(&[]).await? {
            let kind = e["kind"].as_str().unwrap_or_default();
            let about = twice.iter().any(|id| e["subject"] == id.as_str());
            if about || kind.ends_with("_MOVED") || kind.starts_with("MEMBER_") || kind == "NODE_FENCED" {
                findings.push(format!("  {e}"));
            }
        }
        // And each node's log of them.
        for node in &nodes {
            let log = std::fs::read_to_string(node.data_dir().join("stderr.log")).unwrap_or_default();
            for line in log.lines().filter(|l| twice.iter().any(|id| l.contains(id.as_str()))) {
                findings.push(format!("  {}: {line}", node.name));
            }
        }
    }
    ensure!(findings.is_empty(), "{context}\n{}", findings.join("\n"));
    // A run that wrote nothing or acknowledged no task checked nothing.
    ensure!(
        written > 0 && !acked.is_empty(),
        "{context}: nothing was written or acknowledged"
    );
    Ok(())
}

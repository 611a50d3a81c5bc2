//! Webhooks in: `POST /hooks/<name>` with GitHub's signature or a bearer token makes a task
//! (or a swarm task) from the hook's template; a redelivery makes none; a bad signature, a
//! body that does not map, a ping and an event nobody takes each get their own answer.

use anyhow::{ensure, Result};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::support::{text, Node, NodeOpts};

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

struct Post<'a> {
    node: &'a Node,
    hook: &'a str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Post<'_> {
    async fn send(&self) -> Result<(u16, Value)> {
        let mut req = reqwest::Client::new()
            .post(format!("http://{}/hooks/{}", self.node.addr, self.hook))
            .header("content-type", "application/json")
            .body(self.body.clone());
        for (k, v) in &self.headers {
            req = req.header(*k, v);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)?
        };
        Ok((status, body))
    }
}

fn github<'a>(node: &'a Node, event: &str, delivery: &str, body: &Value, secret: &str) -> Post<'a> {
    let body = serde_json::to_vec(body).expect("JSON");
    Post {
        node,
        hook: "issues",
        headers: vec![
            ("x-github-event", event.to_owned()),
            ("x-github-delivery", delivery.to_owned()),
            ("x-hub-signature-256", sign(secret, &body)),
        ],
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_github_delivery_starts_a_task_once_and_a_bad_one_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = "It's a Secret to Everybody";
    std::fs::write(dir.path().join("gh.secret"), format!("{secret}\n"))?;
    std::fs::write(dir.path().join("ci.token"), "ci-token-1")?;
    let config = format!(
        r#"
[[hooks]]
name = "issues"
github_secret_file = "{gh}"
events = ["issues"]
match = {{ "/action" = "opened" }}
capability = "triage"
payload = {{ title = "/issue/title", repo = "/repository/full_name" }}

[[hooks]]
name = "deploys"
bearer_token_file = "{ci}"
swarm = "deployers"
"#,
        gh = dir.path().join("gh.secret").display(),
        ci = dir.path().join("ci.token").display(),
    );
    std::fs::write(dir.path().join("troupe.toml"), config)?;
    let node = Node::start(NodeOpts::named("hooked").arg("--config", dir.path().join("troupe.toml").display())).await?;
    node.spawn_builtin("echo", &["triage"]).await?;

    let opened = json!({ "action": "opened", "issue": { "title": "Crash on start", "number": 7 },
                         "repository": { "full_name": "acme/app" } });
    // GitHub's first delivery to a new hook is a ping.
    let (status, _) = github(&node, "ping", "p-1", &json!({ "zen": "Keep it simple" }), secret)
        .send()
        .await?;
    ensure!(status == 204, "a ping is answered 204, got {status}");

    let (status, made) = github(&node, "issues", "d-1", &opened, secret).send().await?;
    ensure!(status == 202, "a fresh delivery is answered 202, got {status}: {made}");
    let task = text(&made, "/taskId")?;
    let done = node.wait_task_state(&task, "SUCCEEDED").await?;
    ensure!(
        done["payload"] == json!({ "title": "Crash on start", "repo": "acme/app" }),
        "the payload is the mapped fields only: {}",
        done["payload"]
    );

    // A redelivery (same X-GitHub-Delivery) makes no second task.
    let (status, again) = github(&node, "issues", "d-1", &opened, secret).send().await?;
    ensure!(
        status == 200 && again["taskId"] == made["taskId"] && again["duplicate"] == true,
        "{status} {again}"
    );
    // So is one whose mapped payload differs now (the hook's template changed): it is
    // answered with the task the first one made.
    let edited = json!({ "action": "opened", "issue": { "title": "Crash on start (edited)" },
                         "repository": { "full_name": "acme/app" } });
    let (status, again) = github(&node, "issues", "d-1", &edited, secret).send().await?;
    ensure!(
        status == 200 && again["taskId"] == made["taskId"] && again["duplicate"] == true,
        "{status} {again}"
    );

    // Wrong secret, no signature: 401, and no task.
    let (status, refused) = github(&node, "issues", "d-2", &opened, "guess").send().await?;
    ensure!(
        status == 401 && refused["error"]["code"] == "UNAUTHENTICATED",
        "{status} {refused}"
    );
    let mut unsigned = github(&node, "issues", "d-3", &opened, secret);
    unsigned.headers.retain(|(k, _)| *k != "x-hub-signature-256");
    let (status, refused) = unsigned.send().await?;
    ensure!(status == 401, "{status} {refused}");
    ensure!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("X-Hub-Signature-256"),
        "{refused}"
    );
    // A body changed after signing is refused too.
    let mut tampered = github(&node, "issues", "d-4", &opened, secret);
    tampered.body = serde_json::to_vec(&json!({ "action": "opened", "issue": { "title": "rm -rf" } }))?;
    ensure!(tampered.send().await?.0 == 401, "a tampered body is refused");

    // An event the hook does not take, or a body its match refuses: 204, no task.
    let closed = json!({ "action": "closed", "issue": { "title": "x" }, "repository": { "full_name": "acme/app" } });
    ensure!(github(&node, "issues", "d-5", &closed, secret).send().await?.0 == 204);
    ensure!(github(&node, "push", "d-6", &opened, secret).send().await?.0 == 204);
    // A hook that names its events takes none from a request that names no event.
    let mut unnamed = github(&node, "issues", "d-9", &opened, secret);
    unnamed.headers.retain(|(k, _)| *k != "x-github-event");
    ensure!(unnamed.send().await?.0 == 204, "a delivery that names no event");
    // A body its payload cannot be mapped from: 422, naming what is missing.
    let bare = json!({ "action": "opened", "issue": { "title": "no repository" } });
    let (status, unmapped) = github(&node, "issues", "d-7", &bare, secret).send().await?;
    ensure!(status == 422, "{status} {unmapped}");
    ensure!(
        unmapped["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("/repository/full_name"),
        "{unmapped}"
    );
    // No such hook.
    let mut nowhere = github(&node, "issues", "d-8", &opened, secret);
    nowhere.hook = "nope";
    ensure!(nowhere.send().await?.0 == 404);

    let tasks = node.gql_ok("{ tasks(first: 50) { nodes { id } } }", json!({})).await?;
    let count = tasks["tasks"]["nodes"].as_array().map_or(0, Vec::len);
    ensure!(count == 1, "one task for all those requests, found {count}");
    // Every answer is counted by its outcome (the 404 names no hook, and is not).
    let metrics = node.metrics().await?;
    for (outcome, want) in [
        ("submitted", 1.0),
        ("duplicate", 2.0),
        ("ignored", 4.0),
        ("refused", 3.0),
        ("invalid", 1.0),
    ] {
        let seen = super::support::metric(
            &metrics,
            "troupe_hook_requests_total",
            &["hook=\"issues\"", &format!("outcome=\"{outcome}\"")],
        );
        ensure!(seen == want, "{outcome}: {seen}, not {want}");
    }

    // A bearer-token hook gives its swarm (named) a task; a wrong token is refused.
    let member = json!({ "count": 1, "agent": { "name": "deployer", "capabilities": ["deploy"],
                                                 "backend": { "builtin": { "kind": "echo" } } } });
    node.gql_ok(
        "mutation($input: CreateSwarmInput!) { createSwarm(input: $input) { id } }",
        json!({ "input": { "name": "deployers", "templates": [member] } }),
    )
    .await?;
    let deploy = |token: &str, delivery: &str| Post {
        node: &node,
        hook: "deploys",
        headers: vec![
            ("authorization", format!("Bearer {token}")),
            ("x-github-delivery", delivery.to_owned()),
        ],
        body: br#"{"ref":"v1.2.0"}"#.to_vec(),
    };
    ensure!(deploy("ci-token-2", "r-1").send().await?.0 == 401);
    let (status, swarmed) = deploy("ci-token-1", "r-1").send().await?;
    ensure!(status == 202, "{status} {swarmed}");
    let swarm_task = text(&swarmed, "/swarmTaskId")?;
    let (status, again) = deploy("ci-token-1", "r-1").send().await?;
    ensure!(
        status == 200 && again["swarmTaskId"] == swarm_task.as_str(),
        "{status} {again}"
    );
    let q = "query($id: ID!) { swarmTask(id: $id) { state result } }";
    let deadline = super::support::Deadline::after(super::support::WAIT, "the swarm task to succeed");
    loop {
        let t = node.gql_ok(q, json!({ "id": swarm_task })).await?;
        if t["swarmTask"]["state"] == "SUCCEEDED" {
            ensure!(t["swarmTask"]["result"]["ref"] == "v1.2.0", "{t}");
            break;
        }
        deadline.tick(&t).await?;
    }
    Ok(())
}

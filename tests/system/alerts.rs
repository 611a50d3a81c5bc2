//! Alerts that reach people: an agent's crash loop becomes one signed webhook (then one more
//! with the count of its repeats), a Slack message and an email through a real SMTP server
//! (aiosmtpd); a receiver that fails is retried; one that never answers ends FAILED with an
//! ALERT_DELIVERY_FAILED event, listed by `alertDeliveries`.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::support::{Deadline, Node, NodeOpts, WAIT};

/// The Python of the venv `make deps` makes (it has aiosmtpd).
fn python() -> Result<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/mcp-venv/bin/python");
    ensure!(
        Path::new(path).exists(),
        "{path} is missing: run `make deps`, which installs aiosmtpd for these tests"
    );
    Ok(path.into())
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A helper process that printed its ready line.
pub(super) struct Helper {
    _child: tokio::process::Child,
    line: String,
}

pub(super) async fn helper(program: &str, args: &[String]) -> Result<Helper> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await??
        .context("the helper printed nothing")?;
    ensure!(line.starts_with("ready"), "unexpected first line {line:?}");
    Ok(Helper { _child: child, line })
}

pub(super) async fn receiver(log: &Path, fail: u32) -> Result<(Helper, u16)> {
    let args = vec![
        fixture("receiver.py").display().to_string(),
        log.display().to_string(),
        "--fail".into(),
        fail.to_string(),
    ];
    let h = helper("python3", &args).await?;
    let port = h.line.trim_start_matches("ready ").trim().parse()?;
    Ok((h, port))
}

/// A webhook receiver logging to `hook.log` in `dir`, and a config there (`troupe.toml`)
/// whose channel `ops` posts to it, followed by `rules` (TOML); the receiver (kept while it
/// is held), its port, its log and the config's path.
pub(super) async fn webhook_config(dir: &Path, rules: &str) -> Result<(Helper, u16, PathBuf, PathBuf)> {
    let log = dir.join("hook.log");
    let (hook, port) = receiver(&log, 0).await?;
    let config = dir.join("troupe.toml");
    std::fs::write(
        &config,
        format!(
            "[[alert_channels]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/\"\n\n{rules}"
        ),
    )?;
    Ok((hook, port, log, config))
}

pub(super) fn lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until `log` holds a line `done` accepts; all its lines then.
pub(super) async fn wait_lines(log: &Path, what: &str, done: impl Fn(&[Value]) -> bool) -> Result<Vec<Value>> {
    let deadline = Deadline::after(WAIT, what);
    loop {
        let seen = lines(log);
        if done(&seen) {
            return Ok(seen);
        }
        deadline.tick(&seen.len()).await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_reaches_a_webhook_slack_and_email_once_with_its_count() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (hook_log, slack_log, mail_log) = (
        dir.path().join("hook.log"),
        dir.path().join("slack.log"),
        dir.path().join("mail.log"),
    );
    // The webhook's receiver refuses the first request: the delivery is retried.
    let (_hook, hook_port) = receiver(&hook_log, 1).await?;
    let (_slack, slack_port) = receiver(&slack_log, 0).await?;
    let smtp_port = super::support::free_port()?;
    let _smtp = helper(
        &python()?,
        &[
            fixture("smtp_sink.py").display().to_string(),
            smtp_port.to_string(),
            mail_log.display().to_string(),
        ],
    )
    .await?;
    // Nothing listens here: its deliveries fail for good.
    let void_port = super::support::free_port()?;
    let secret = "whsec_".to_owned() + &base64::engine::general_purpose::STANDARD.encode("a shared secret");
    std::fs::write(dir.path().join("hook.secret"), &secret)?;
    let config = format!(
        r#"
[[alert_channels]]
name = "ops"
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/alerts?token=abc123"
secret_file = "{secret_file}"

[[alert_channels]]
name = "chat"
kind = "slack"
url = "http://127.0.0.1:{slack_port}/services/T0/B0/XYZ"

[[alert_channels]]
name = "mail"
kind = "email"
smtp = "127.0.0.1:{smtp_port}"
smtp_tls = "none"
from = "troupe@example.test"
to = ["oncall@example.test"]

[[alert_channels]]
name = "void"
kind = "webhook"
url = "http://127.0.0.1:{void_port}/"

[[alert_rules]]
name = "agents-failing"
kinds = ["AGENT_FAILED", "AGENT_ALERT"]
severity = "warning"
channels = ["ops", "chat", "mail", "void"]
group_interval_ms = 3000

[[alert_rules]]
name = "delivery-failures"
kinds = ["ALERT_DELIVERY_FAILED"]
channels = ["void"]
"#,
        secret_file = dir.path().join("hook.secret").display(),
    );
    std::fs::write(dir.path().join("troupe.toml"), config)?;
    let node = Node::start(
        NodeOpts::named("alerting")
            .arg("--config", dir.path().join("troupe.toml").display())
            .arg("--alert-retry-ms", "100,100"),
    )
    .await?;
    let rules = node
        .gql_ok(
            "{ alertRules { name channels severity } alertChannels { name kind signed } }",
            json!({}),
        )
        .await?;
    ensure!(rules["alertRules"][0]["name"] == "agents-failing", "{rules}");
    ensure!(
        rules["alertChannels"][0]["signed"] == true && rules["alertChannels"][1]["kind"] == "slack",
        "{rules}"
    );
    // What a viewer reads of the channels holds no secret: no query string, no Slack path.
    let viewer = node.create_token("viewer").await?;
    let shown = node
        .gql_ok_as(&viewer, "{ alertChannels { target } }", json!({}))
        .await?;
    ensure!(
        !shown.to_string().contains("abc123") && !shown.to_string().contains("XYZ"),
        "{shown}"
    );

    // A process agent that exits before it is ready: its supervisor tries twice more, then
    // gives it up (AGENT_FAILED three times, then AGENT_ALERT).
    let exits = json!({
        "name": "reviewer",
        "backend": { "process": { "command": ["/bin/sh", "-c", "echo \"can't open file reviewer.py\" >&2; exit 3"] } },
        "restartLimit": { "maxRestarts": 2, "windowMs": 600000 },
    });
    let _ = node
        .gql(
            "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }",
            json!({ "input": exits }),
        )
        .await?;
    let listed = node.gql_ok("{ agents(first: 5) { nodes { id } } }", json!({})).await?;
    let agent = super::support::text(&listed, "/agents/nodes/0/id")?;
    node.wait_event("AGENT_ALERT", &agent).await?;
    let events =
        node.events_for("AGENT_FAILED", &agent).await?.len() + node.events_for("AGENT_ALERT", &agent).await?.len();
    ensure!(events >= 3, "a crash loop makes several events, saw {events}");

    // The webhook: the first notice at once (count 1), the repeats folded into one more with
    // their count when the group's window ends; together they account for every event.
    let delivered = |seen: &[Value]| {
        seen.iter()
            .filter(|l| l["answered"] == 200)
            .cloned()
            .collect::<Vec<_>>()
    };
    let seen = wait_lines(
        &hook_log,
        "the webhook to receive every event of the crash loop",
        |seen| {
            let counts: u64 = delivered(seen)
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l["body"].as_str()?).ok())
                .map(|b| b["troupe"]["count"].as_u64().unwrap_or(0))
                .sum();
            counts >= events as u64
        },
    )
    .await?;
    let ok = delivered(&seen);
    ensure!(
        ok.len() < events,
        "{} notices for {events} events: repeats are folded",
        ok.len()
    );
    let first: Value = serde_json::from_str(ok[0]["body"].as_str().context("body")?)?;
    ensure!(first["version"] == "4" && first["status"] == "firing", "{first}");
    ensure!(
        first["troupe"]["count"] == 1,
        "the first notice is sent at once: {first}"
    );
    let summary = first["commonAnnotations"]["summary"].as_str().unwrap_or_default();
    ensure!(summary.starts_with("agent reviewer "), "named, not by id: {summary}");
    ensure!(
        summary.contains("can't open file reviewer.py"),
        "with the cause: {summary}"
    );
    ensure!(
        ok.len() < 2
            || serde_json::from_str::<Value>(ok[1]["body"].as_str().unwrap_or("{}"))?["troupe"]["count"].as_u64()
                > Some(1),
        "the second notice carries the repeats' count: {ok:?}"
    );
    // The refused first attempt was retried under the same webhook-id.
    ensure!(
        seen[0]["answered"] == 503 && seen[0]["headers"]["webhook-id"] == ok[0]["headers"]["webhook-id"],
        "{seen:?}"
    );
    // Signed as Standard Webhooks say: HMAC-SHA256 of "{id}.{timestamp}.{body}".
    let h = &ok[0]["headers"];
    let mut mac = Hmac::<Sha256>::new_from_slice(b"a shared secret")?;
    mac.update(
        format!(
            "{}.{}.",
            h["webhook-id"].as_str().unwrap_or(""),
            h["webhook-timestamp"].as_str().unwrap_or("")
        )
        .as_bytes(),
    );
    mac.update(ok[0]["body"].as_str().unwrap_or("").as_bytes());
    let want = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    ensure!(
        h["webhook-signature"] == want.as_str(),
        "signature {} is not {want}",
        h["webhook-signature"]
    );

    // Slack and email say the same, by name.
    let slack = wait_lines(&slack_log, "the Slack message", |s| !s.is_empty()).await?;
    let message: Value = serde_json::from_str(slack[0]["body"].as_str().context("body")?)?;
    ensure!(
        message["text"].as_str().unwrap_or_default().contains("agent reviewer"),
        "{message}"
    );
    ensure!(slack[0]["path"] == "/services/T0/B0/XYZ", "{}", slack[0]);
    let mail = wait_lines(&mail_log, "the email", |m| !m.is_empty()).await?;
    ensure!(mail[0]["to"] == json!(["oncall@example.test"]), "{}", mail[0]);
    let data = mail[0]["data"].as_str().unwrap_or_default();
    // The first failure, which its supervisor restarts, is a warning.
    ensure!(data.contains("Subject: [Troupe warning] agent reviewer"), "{data}");

    // The channel nobody answers: three attempts, then FAILED, an event, and the list says so.
    let deadline = Deadline::after(WAIT, "a delivery to the void channel to fail");
    let failed = loop {
        let d = node
            .gql_ok(
                "{ alertDeliveries(outcome: FAILED) { id channel attempts lastError summary rule } }",
                json!({}),
            )
            .await?;
        let agents = d["alertDeliveries"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["rule"] == "agents-failing"));
        if let Some(f) = agents.cloned() {
            break f;
        }
        deadline.tick(&d).await?;
    };
    ensure!(failed["channel"] == "void" && failed["attempts"] == 3, "{failed}");
    ensure!(
        failed["lastError"].as_str().unwrap_or_default().contains("no answer"),
        "{failed}"
    );
    let id = super::support::text(&failed, "/id")?;
    node.wait_event("ALERT_DELIVERY_FAILED", &id).await?;
    // The rule on delivery failures sends that event to the void too, and that delivery
    // fails as well: it makes no event of its own (each would be delivered, and fail, again).
    let deadline = Deadline::after(WAIT, "the delivery about a delivery failure to fail");
    loop {
        let d = node
            .gql_ok("{ alertDeliveries(outcome: FAILED) { id rule } }", json!({}))
            .await?;
        let list = d["alertDeliveries"].as_array().cloned().unwrap_or_default();
        if list.iter().any(|d| d["rule"] == "delivery-failures") {
            let about_failures: Vec<&str> = list
                .iter()
                .filter(|d| d["rule"] == "delivery-failures")
                .filter_map(|d| d["id"].as_str())
                .collect();
            let events = node.events(&["ALERT_DELIVERY_FAILED"]).await?;
            ensure!(
                events
                    .iter()
                    .all(|e| !about_failures.contains(&e["subject"].as_str().unwrap_or_default())),
                "{events:?}"
            );
            break;
        }
        deadline.tick(&d).await?;
    }
    // The receiver logs a request before its answer reaches the node, and the node records the
    // outcome after the answer: wait until no webhook delivery is still pending.
    let deadline = Deadline::after(WAIT, "the webhook's deliveries to be recorded");
    let (all, ops) = loop {
        let all = node
            .gql_ok(
                "{ alertDeliveries(first: 100) { channel outcome attempts } }",
                json!({}),
            )
            .await?;
        let ops: Vec<Value> = all["alertDeliveries"]
            .as_array()
            .context("list")?
            .iter()
            .filter(|d| d["channel"] == "ops")
            .cloned()
            .collect();
        if ops.iter().all(|d| d["outcome"] != "PENDING") {
            break (all, ops);
        }
        deadline.tick(&all).await?;
    };
    ensure!(ops.iter().all(|d| d["outcome"] == "DELIVERED"), "{all}");
    ensure!(
        ops.iter().any(|d| d["attempts"] == 2),
        "the refused one took two attempts: {all}"
    );
    Ok(())
}

/// An agent that crashes once and is restarted by its supervisor: a warning, resolved once
/// the restart held for the rule's group interval, with the labels it fired with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_its_supervisor_recovers_from_is_a_warning_resolved_with_the_labels_it_fired_with() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = "[[alert_rules]]\nname = \"agents\"\nkinds = [\"AGENT_*\"]\nseverity = \"warning\"\nchannels = [\"ops\"]\ngroup_interval_ms = 1000\n";
    let (_hook, _port, log, config) = webhook_config(dir.path(), rules).await?;
    let node = Node::start(NodeOpts::named("healing").arg("--config", config.display())).await?;
    let agent = node.spawn_builtin("panic", &["crash"]).await?;
    let _ = node
        .submit(json!({ "agentId": agent, "payload": 1, "maxAttempts": 1 }))
        .await?;
    let alerts = |seen: &[Value]| -> Vec<Value> {
        seen.iter()
            .filter_map(|l| serde_json::from_str::<Value>(l["body"].as_str()?).ok())
            .collect()
    };
    let seen = wait_lines(&log, "the crash's notice and its resolution", |seen| {
        alerts(seen).iter().any(|b| b["status"] == "resolved")
    })
    .await?;
    let bodies = alerts(&seen);
    let labels: Vec<(&str, &str, &str)> = bodies
        .iter()
        .map(|b| {
            let l = &b["alerts"][0]["labels"];
            (
                b["status"].as_str().unwrap_or_default(),
                l["kind"].as_str().unwrap_or_default(),
                l["severity"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    ensure!(
        labels
            == [
                ("firing", "AGENT_FAILED", "warning"),
                ("resolved", "AGENT_FAILED", "warning")
            ],
        "{bodies:?}"
    );
    let resolved = &bodies[1];
    ensure!(
        resolved["troupe"]["kind"] == "AGENT_RESTARTED"
            && resolved["alerts"][0]["annotations"]["summary"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Resolved: "),
        "{resolved}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_made_through_graphql_alerts_at_once_and_a_test_alert_goes_out() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_hook, port, log, config) = webhook_config(dir.path(), "").await?;
    let node = Node::start(NodeOpts::named("tested").arg("--config", config.display())).await?;
    let sent = node
        .gql_ok(
            "mutation { sendTestAlert(channel: \"ops\") { outcome attempts summary } }",
            json!({}),
        )
        .await?;
    ensure!(sent["sendTestAlert"]["outcome"] == "DELIVERED", "{sent}");
    ensure!(lines(&log).len() == 1, "one request reached the receiver");
    let unknown = node
        .gql("mutation { sendTestAlert(channel: \"nope\") { id } }", json!({}))
        .await?;
    super::support::expect_code(&unknown, "NOT_FOUND")?;

    // A rule made through the API: refused for a channel nobody defined, then taken up by
    // the notifier at once.
    let set = "mutation($input: AlertRuleInput!) { setAlertRule(input: $input) { name source severity } }";
    let bad = node
        .gql(
            set,
            json!({ "input": { "name": "made", "kinds": ["AGENT_ALERT"], "channels": ["pager"] } }),
        )
        .await?;
    super::support::expect_code(&bad, "INVALID_INPUT")?;
    ensure!(
        bad["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no channel is named \"pager\""),
        "{bad}"
    );
    let made = node
        .gql_ok(
            set,
            json!({ "input": { "name": "made", "kinds": ["AGENT_ALERT"], "severity": "critical", "channels": ["ops"] } }),
        )
        .await?;
    ensure!(made["setAlertRule"]["source"] == "API", "{made}");
    let exits = json!({
        "name": "quitter",
        "backend": { "process": { "command": ["/bin/sh", "-c", "exit 3"] } },
        "restartLimit": { "maxRestarts": 1, "windowMs": 600000 },
    });
    let _ = node
        .gql(
            "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id } }",
            json!({ "input": exits }),
        )
        .await?;
    let seen = wait_lines(&log, "the API rule's notice", |seen| {
        seen.iter().any(|l| {
            l["body"]
                .as_str()
                .unwrap_or_default()
                .contains("\"alertname\":\"made\"")
        })
    })
    .await?;
    ensure!(
        seen.iter()
            .any(|l| l["body"].as_str().unwrap_or_default().contains("agent quitter")),
        "{seen:?}"
    );
    let deleted = node
        .gql_ok("mutation { deleteAlertRule(name: \"made\") }", json!({}))
        .await?;
    ensure!(deleted["deleteAlertRule"] == true, "{deleted}");
    let rules = node.gql_ok("{ alertRules { name } }", json!({})).await?;
    ensure!(rules["alertRules"] == json!([]), "{rules}");

    // A channel made through the API: signed with its secret, listed without it, named by a
    // rule at once, kept while a rule names it; a viewer may not make one.
    let expect_code = super::support::expect_code;
    let channel = json!({ "name": "made-hook", "kind": "webhook", "url": format!("http://127.0.0.1:{port}/made"), "secret": "s3cret" });
    let set_channel =
        "mutation($input: AlertChannelInput!) { setAlertChannel(input: $input) { name kind target signed } }";
    let viewer = node.create_token("viewer").await?;
    expect_code(
        &node.gql_as(&viewer, set_channel, json!({ "input": channel })).await?,
        "FORBIDDEN",
    )?;
    expect_code(
        &node
            .gql(set_channel, json!({ "input": { "name": "x", "kind": "pager" } }))
            .await?,
        "INVALID_INPUT",
    )?;
    let config_named = json!({ "input": { "name": "ops", "kind": "slack", "url": "http://127.0.0.1:1/" } });
    expect_code(&node.gql(set_channel, config_named).await?, "CONFLICT")?;
    let made = node.gql_ok(set_channel, json!({ "input": channel })).await?;
    let want = json!({ "name": "made-hook", "kind": "webhook", "target": format!("http://127.0.0.1:{port}/made"), "signed": true });
    ensure!(made["setAlertChannel"] == want, "{made}");
    let listed = node
        .gql_ok("{ alertChannels { name kind target signed } }", json!({}))
        .await?;
    ensure!(
        !listed.to_string().contains("s3cret") && listed["alertChannels"].as_array().is_some_and(|c| c.len() == 2),
        "{listed}"
    );
    let before = lines(&log).len();
    let tested = node
        .gql_ok(
            "mutation { sendTestAlert(channel: \"made-hook\") { outcome } }",
            json!({}),
        )
        .await?;
    ensure!(tested["sendTestAlert"]["outcome"] == "DELIVERED", "{tested}");
    let got = lines(&log);
    ensure!(got.len() == before + 1, "{got:?}");
    ensure!(
        got[before]["headers"]["webhook-signature"]
            .as_str()
            .is_some_and(|s| s.starts_with("v1,")),
        "not signed: {}",
        got[before]
    );
    let uses = json!({ "input": { "name": "uses-it", "kinds": ["AGENT_ALERT"], "channels": ["made-hook"] } });
    node.gql_ok(set, uses).await?;
    let delete = "mutation { deleteAlertChannel(name: \"made-hook\") }";
    expect_code(&node.gql(delete, json!({})).await?, "CONFLICT")?;
    node.gql_ok("mutation { deleteAlertRule(name: \"uses-it\") }", json!({}))
        .await?;
    ensure!(node.gql_ok(delete, json!({})).await?["deleteAlertChannel"] == true);
    drop(node);

    // A rule naming a channel nobody defined: the node refuses to start, and says why.
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[alert_rules]]\nname = \"r\"\nchannels = [\"pager\"]\n",
    )?;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["serve", "--config"])
        .arg(dir.path().join("bad.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .kill_on_drop(true)
        .output()
        .await?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && said.contains("no channel is named \"pager\""),
        "{said}"
    );
    Ok(())
}

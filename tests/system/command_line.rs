//! The command line's cluster and experiment nouns, its outputs for scripts (`-o jsonl`,
//! `-o name`) and its contexts, against a real node.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::{text, Node, NodeOpts, WAIT};

/// Runs `troupe args…` with these environment variables (and no TROUPE_URL or TROUPE_TOKEN
/// unless given): its exit code, standard output and error.
pub(super) async fn troupe(args: &[&str], env: &[(&str, String)]) -> Result<(i32, String, String)> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_troupe"));
    command.args(args).env_remove("TROUPE_URL").env_remove("TROUPE_TOKEN");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = tokio::time::timeout(WAIT, command.output()).await??;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok((out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr)))
}

pub(super) fn at(node: &Node) -> Vec<(&'static str, String)> {
    vec![
        ("TROUPE_URL", format!("http://{}", node.addr)),
        ("TROUPE_TOKEN", node.token.clone()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_experiments_from_the_command_line_with_outputs_for_scripts_and_contexts() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo").arg("--fault-injection", "true")).await?;
    let input = json!({ "name": "echoer", "backend": { "builtin": { "kind": "echo" } } });
    let agent = text(&node.spawn_agent(input).await?, "/id")?;

    // Held tool calls: what each would do, and who decided it and why (none here: the header).
    let (code, out, err) = troupe(&["approvals", "list", "--all"], &at(&node)).await?;
    let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
    ensure!(
        code == 0
            && ["ID", "TOOL", "ARGUMENTS", "STATE", "DECIDED_BY", "NOTE"]
                .iter()
                .all(|c| header.contains(c)),
        "{out}{err}"
    );

    // A URL where nothing listens: said in the connection's words.
    let nowhere = [
        (
            "TROUPE_URL",
            format!("http://127.0.0.1:{}", super::support::free_port()?),
        ),
        ("TROUPE_TOKEN", node.token.clone()),
    ];
    let (code, _, err) = troupe(&["cluster", "status"], &nowhere).await?;
    ensure!(code == 5 && err.contains("Connection refused"), "{code} {err}");

    // The cluster: who leads, and the members.
    let (code, out, err) = troupe(&["cluster", "status"], &at(&node)).await?;
    ensure!(
        code == 0 && out.starts_with("leader solo") && out.contains("VOTER"),
        "{out}{err}"
    );
    // With what a member coming back is judged by: its applied lag, whether its work runs.
    let header = out.lines().find(|l| l.starts_with("NAME")).unwrap_or_default();
    ensure!(header.contains("APPLIED_LAG  WORKING"), "{out}");
    ensure!(
        out.lines().any(|l| l.starts_with("solo") && l.contains(" true ")),
        "{out}"
    );
    // A role as GraphQL spells it is taken too (the API then refuses to demote the only voter).
    let (code, _, err) = troupe(&["cluster", "role", "solo", "LEARNER"], &at(&node)).await?;
    ensure!(code == 1 && !err.contains("invalid value"), "{code} {err}");
    // Its output into a pipe whose reader is gone (`troupe cluster status | head -0`): it
    // ends by SIGPIPE, quietly, as Unix tools do, not by a panic with a backtrace. So do
    // `schema` and `completion`, which ask no node.
    for args in [&["cluster", "status"][..], &["schema"], &["completion", "zsh"]] {
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_troupe"));
        command.args(args).envs(at(&node)).stdout(writer);
        // (spawned: tokio's `output()` would make stdout a pipe of its own)
        let child = command.stderr(std::process::Stdio::piped()).spawn()?;
        let out = tokio::time::timeout(WAIT, child.wait_with_output()).await??;
        let err = String::from_utf8_lossy(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        ensure!(
            out.status.signal() == Some(libc::SIGPIPE) && err.is_empty(),
            "{args:?} into a closed pipe: {:?}, {err}",
            out.status
        );
    }
    // A node that hangs up on the request (https:// to a gateway that speaks plain HTTP) is
    // an error the command reports, not a silent death by SIGPIPE.
    let https = format!("https://{}", node.addr);
    let (code, _, err) = troupe(&["agents", "list", "--url", &https], &at(&node)).await?;
    ensure!(code == 5 && err.contains("cannot reach"), "{code}: {err}");

    // `-o name` prints ids a line each; `-o jsonl` an object a line.
    let (code, out, _) = troupe(&["agents", "list", "-o", "name"], &at(&node)).await?;
    ensure!(code == 0 && out.trim() == agent, "{out}");
    let (code, out, _) = troupe(&["agents", "list", "-o", "jsonl"], &at(&node)).await?;
    let rows: Vec<Value> = out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    ensure!(code == 0 && rows.len() == 1 && rows[0]["name"] == "echoer", "{out}");

    // An experiment from a file: a dry run names the target, a real one passes.
    let dir = tempfile::tempdir()?;
    let spec = dir.path().join("crash.json");
    let faults = json!({ "name": "crash-echoer", "faults": [{ "action": "CRASH", "target": { "kinds": ["AGENT"] } }] });
    std::fs::write(&spec, faults.to_string())?;
    let spec = spec.to_str().context("path")?;
    let (code, out, err) = troupe(&["experiments", "start", spec, "--dry-run"], &at(&node)).await?;
    ensure!(
        code == 0 && out.contains("DRY_RUN") && out.contains("echoer"),
        "{out}{err}"
    );
    let (code, out, err) = troupe(&["experiments", "start", spec, "--wait"], &at(&node)).await?;
    ensure!(
        code == 0 && out.contains("PASSED") && out.contains("RECOVERED"),
        "{out}{err}"
    );
    let (_, ids, _) = troupe(&["experiments", "list", "-o", "name"], &at(&node)).await?;
    let id = ids.lines().next().context("an experiment")?;
    let (code, out, _) = troupe(&["experiments", "get", id, "-o", "json"], &at(&node)).await?;
    let got: Value = serde_json::from_str(&out)?;
    ensure!(code == 0 && got[0]["state"] == "PASSED", "{out}");
    let (code, _, err) = troupe(&["experiments", "get", "nothing"], &at(&node)).await?;
    ensure!(code == 3, "not found exits 3: {err}");

    // A task by its name's end, shown with its agent's name.
    let task = node.submit(json!({ "agentId": agent, "payload": "x" })).await?;
    let task = text(&task, "/id")?;
    node.wait_task_state(&task, "SUCCEEDED").await?;
    let bare = task.split('@').next().context("id")?.replace('-', "");
    let tail = &bare[bare.len() - 6..];
    let (code, out, err) = troupe(&["tasks", "get", tail], &at(&node)).await?;
    ensure!(code == 0 && out.contains(&format!("echoer · {tail}")), "{out}{err}");
    // With its result, found by name or by id (it had none: only `submit --wait` showed it),
    // under headers whose words are apart (AGENTNAME before).
    let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
    ensure!(
        header.contains(&"RESULT")
            && header.contains(&"AGENT_NAME")
            && out.lines().nth(1).is_some_and(|row| row.ends_with(" x")),
        "{out}"
    );
    let (code, out, err) = troupe(&["tasks", "get", &task, "-o", "json"], &at(&node)).await?;
    ensure!(code == 0 && out.contains("\"result\": \"x\""), "{out}{err}");
    // Listed by state and agent (by its name).
    let list = |state: &'static str| ["tasks", "list", "--state", state, "--agent", "echoer", "-o", "name"];
    let (code, out, err) = troupe(&list("succeeded"), &at(&node)).await?;
    ensure!(code == 0 && out.lines().any(|l| l == task), "{out}{err}");
    let (code, out, err) = troupe(&list("queued"), &at(&node)).await?;
    ensure!(code == 0 && out.is_empty(), "{out}{err}");

    // Events read as sentences, a task aimed at an agent by the agent's name.
    let (_, out, _) = troupe(&["events", "--kind", "AGENT_FAILED"], &at(&node)).await?;
    ensure!(out.contains("agent echoer failed: fault injection"), "{out}");
    let (_, out, _) = troupe(&["events", "--kind", "TASK_SUCCEEDED", "--tail", "1"], &at(&node)).await?;
    ensure!(out.contains(&format!("task echoer · {tail} succeeded")), "{out}");
    // A task's events by the end of its id, as its name shows it (nothing was printed).
    let (code, out, err) = troupe(&["events", "--subject", tail], &at(&node)).await?;
    ensure!(
        code == 0 && out.contains(&format!("task echoer · {tail} succeeded")),
        "{out}{err}"
    );
    // `-o json` is one array, as for every list.
    let (code, out, _) = troupe(&["events", "--tail", "2", "-o", "json"], &at(&node)).await?;
    let events: Vec<Value> = serde_json::from_str(&out).with_context(|| out.clone())?;
    ensure!(code == 0 && events.len() == 2 && events[1]["kind"].is_string(), "{out}");

    // A context names the node and its token file; the flags are not needed then.
    let token = dir.path().join("token");
    std::fs::write(&token, &node.token)?;
    let config = vec![("TROUPE_CLI_CONFIG", dir.path().join("cli.toml").display().to_string())];
    let url = format!("http://{}", node.addr);
    // Set with a path relative to where it was set, used from elsewhere (the path was kept
    // as typed, and looked for in each later command's directory).
    let set = ["context", "set", "lab", "--to-url", &url, "--token-file", "token"];
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_troupe"));
    command
        .args(set)
        .current_dir(dir.path())
        .env_remove("TROUPE_URL")
        .env_remove("TROUPE_TOKEN");
    command.env(config[0].0, &config[0].1);
    let made = tokio::time::timeout(WAIT, command.output()).await??;
    ensure!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    // An address that is no node's is refused when it is set, not when it is first used.
    let (code, _, err) = troupe(&["context", "set", "bad", "--to-url", "notaurl"], &config).await?;
    ensure!(code == 2 && err.contains("http://host:port"), "{code} {err}");
    let (code, _, err) = troupe(&["agents", "list"], &config).await?;
    ensure!(code != 0, "no current context yet, no node at the default URL: {err}");
    ensure!(troupe(&["context", "use", "lab"], &config).await?.0 == 0);
    let (code, out, err) = troupe(&["agents", "list", "-o", "name"], &config).await?;
    ensure!(code == 0 && out.trim() == agent, "{out}{err}");
    let (code, out, _) = troupe(&["context", "list"], &config).await?;
    ensure!(code == 0 && out.contains("*") && out.contains(&url), "{out}");
    let (code, _, err) = troupe(&["agents", "list", "--context", "elsewhere"], &config).await?;
    ensure!(code == 2 && err.contains("no context elsewhere"), "{err}");
    // `--url` (or TROUPE_URL) naming the context's own node keeps the context's token; an
    // address without its scheme is a usage error.
    let mut same = config.clone();
    same.push(("TROUPE_URL", format!("{url}/")));
    let (code, out, err) = troupe(&["agents", "list", "-o", "name"], &same).await?;
    ensure!(code == 0 && out.trim() == agent, "{out}{err}");
    let bare = node.addr.to_string();
    let (code, _, err) = troupe(&["agents", "list", "--url", &bare], &config).await?;
    ensure!(code == 2 && err.contains("http://host:port"), "{code} {err}");

    // A payload that starts as JSON does must be JSON: a typo is refused, nothing submitted.
    let (code, _, err) = troupe(&["submit", "--agent", "echoer", "--payload", "{bad json"], &config).await?;
    ensure!(code == 2 && err.contains("not JSON"), "{code} {err}");
    // Filters that find nothing say so on stderr; a kind is upper case whatever is typed.
    let (code, out, err) = troupe(&["events", "--kind", "task_succeeded", "--tail", "1"], &config).await?;
    ensure!(code == 0 && out.contains("succeeded"), "{out}{err}");
    let (code, out, err) = troupe(&["events", "--subject", "ghost"], &config).await?;
    ensure!(
        code == 0 && out.is_empty() && err.contains("ghost names no agent"),
        "{out}{err}"
    );
    // Stopped at once, without the grace period.
    let (code, out, err) = troupe(&["agents", "stop", "echoer", "--now", "-o", "jsonl"], &config).await?;
    ensure!(code == 0 && out.contains("\"STOPP"), "{out}{err}");
    node.wait_event("AGENT_STOPPED", &agent).await?;
    // A graceful stop says it is STOPPING first; this one did not drain.
    let stopping = node.events_for("AGENT_STOPPING", &agent).await?;
    ensure!(stopping.is_empty(), "{stopping:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_longer_than_a_page_is_listed_whole_and_its_last_one_found_by_name() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo")).await?;
    let spawn = |i: usize| {
        let input = json!({ "name": format!("n{i:04}"), "backend": { "builtin": { "kind": "echo" } } });
        let node = &node;
        async move { node.spawn_agent(input).await }
    };
    // More than the API's largest page (500).
    for chunk in (0..520).collect::<Vec<_>>().chunks(40) {
        futures::future::try_join_all(chunk.iter().map(|i| spawn(*i))).await?;
    }
    let (code, out, err) = troupe(&["agents", "list", "-o", "name"], &at(&node)).await?;
    ensure!(
        code == 0 && out.lines().count() == 520,
        "{} rows: {err}",
        out.lines().count()
    );
    let (code, out, _) = troupe(&["agents", "list", "--first", "7", "-o", "name"], &at(&node)).await?;
    ensure!(code == 0 && out.lines().count() == 7, "{out}");
    let (code, out, err) = troupe(&["agents", "get", "n0519", "-o", "jsonl"], &at(&node)).await?;
    ensure!(code == 0 && out.contains("\"n0519\""), "{out}{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_changes_tasks_swarms_hosts_and_vms_by_name_from_the_command_line() -> Result<()> {
    let node = Node::start(NodeOpts::named("solo").arg("--simulated-hosts", 2)).await?;
    let env = at(&node);
    let ok = |(code, out, err): (i32, String, String)| -> Result<String> {
        ensure!(code == 0, "exit {code}: {out}{err}");
        Ok(out)
    };

    // A VM by its name: stopped, started, moved to the other host.
    let q = "mutation { createVm(input: { name: \"web-1\", vcpus: 1, memoryMiB: 256 }) { id host { name } } }";
    let vm = node.gql_ok(q, json!({})).await?["createVm"].clone();
    let from = vm["host"]["name"].as_str().context("its host")?.to_owned();
    let to = if from == "sim-1" { "sim-2" } else { "sim-1" };
    ensure!(ok(troupe(&["vms", "stop", "web-1"], &env).await?)?.contains("STOPPED"));
    ensure!(ok(troupe(&["vms", "start", "web-1"], &env).await?)?.contains("RUNNING"));
    let moved = ok(troupe(&["vms", "migrate", "web-1", "--to", to], &env).await?)?;
    ensure!(!moved.contains("FAILED"), "{moved}");
    // Hosts by name, not id: the migration's ends, and the VM's host in the list.
    let ends: Vec<&str> = moved.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    ensure!(
        ends.get(3) == Some(&from.as_str()) && ends.get(4) == Some(&to),
        "{moved}"
    );
    let listed = ok(troupe(&["vms", "list"], &env).await?)?;
    ensure!(
        listed.lines().next().is_some_and(|h| h.ends_with("HOST"))
            && listed
                .lines()
                .nth(1)
                .is_some_and(|r| r.ends_with(&format!("RUNNING  {to}"))),
        "{listed}"
    );

    // The emptied host into maintenance, and out.
    let out = ok(troupe(&["hosts", "maintenance", &from, "-o", "jsonl"], &env).await?)?;
    ensure!(out.contains("MAINTENANCE"), "{out}");
    ok(troupe(&["hosts", "maintenance", &from, "--off"], &env).await?)?;

    // A swarm scaled and destroyed by name; `swarms list` shows its status.
    let q = "mutation { createSwarm(input: { name: \"crew\", templates: [{ count: 1, agent: { name: \"m\", backend: { builtin: { kind: \"echo\" } } } }], maxAgents: 3 }) { id } }";
    node.gql_ok(q, json!({})).await?;
    let out = ok(troupe(&["swarms", "scale", "crew", "2", "-o", "jsonl"], &env).await?)?;
    ensure!(out.contains("\"size\":2"), "{out}");
    ensure!(ok(troupe(&["swarms", "list"], &env).await?)?.contains("crew"));
    // Destroyed, it is said to be gone (the state it was answered with is from before).
    let out = ok(troupe(&["swarms", "destroy", "crew"], &env).await?)?;
    ensure!(out.starts_with("destroyed swarm crew ("), "{out}");

    // A task waiting for a capability nobody has: `submit` says so on stderr (the node's
    // warning), its answer alone on stdout; then cancelled by its id's end.
    let (code, out, err) = troupe(&["submit", "--capability", "nobody", "-o", "name"], &env).await?;
    ensure!(code == 0, "exit {code}: {out}{err}");
    ensure!(
        err.contains("warning: NO_AGENT:") && err.contains("no agent has capability nobody"),
        "the waiting task's warning: {err}"
    );
    let task = out.trim().to_owned();
    ensure!(task.contains('@') && !task.contains(' '), "the id alone: {out}");
    // `tasks get` says why it waits.
    let out = ok(troupe(&["tasks", "get", &task, "-o", "json"], &env).await?)?;
    ensure!(
        out.contains("\"waitingFor\": \"no agent has capability nobody"),
        "{out}"
    );
    // The task's limits and an LLM agent's session, from the command line.
    let args = [
        "submit",
        "--capability",
        "nobody",
        "--max-attempts",
        "1",
        "--session",
        "s1",
        "--max-tokens",
        "900",
        "--max-cost-usd",
        "0.25",
        "-o",
        "name",
    ];
    let limited = ok(troupe(&args, &env).await?)?.trim().to_owned();
    let q = "query($id: ID!) { task(id: $id) { maxAttempts session maxTokens maxCostUsd } }";
    let seen = node.gql_ok(q, json!({ "id": limited })).await?;
    ensure!(
        seen["task"] == json!({ "maxAttempts": 1, "session": "s1", "maxTokens": 900, "maxCostUsd": 0.25 }),
        "{seen}"
    );
    let bare = task.split('@').next().context("id")?.replace('-', "");
    let out = ok(troupe(&["tasks", "cancel", &bare[bare.len() - 6..]], &env).await?)?;
    ensure!(out.contains("CANCELLED"), "{out}");
    let (code, _, _) = troupe(&["vms", "reboot", "nothing"], &env).await?;
    ensure!(code == 3, "a VM nobody has is not found");
    // A VM made from the command line, on the host asked for, with its labels.
    let out = ok(troupe(
        &[
            "vms",
            "create",
            "web-2",
            "--vcpus",
            "2",
            "--memory-mib",
            "256",
            "--host",
            "sim-2",
            "--label",
            "app=web",
            "-o",
            "jsonl",
        ],
        &env,
    )
    .await?)?;
    let made: Value = serde_json::from_str(out.trim()).context("one JSON line")?;
    ensure!(made["state"] == "RUNNING" && made["host"] == "sim-2", "{out}");
    let q = "query($id: ID!) { vm(id: $id) { spec { vcpus memoryMiB labels { key value } } } }";
    let read = node.gql_ok(q, json!({ "id": made["id"] })).await?;
    ensure!(
        read["vm"]["spec"] == json!({ "vcpus": 2, "memoryMiB": 256, "labels": [{ "key": "app", "value": "web" }] }),
        "{read}"
    );
    let (code, _, err) = troupe(&["vms", "create", "bad", "--label", "nokey"], &env).await?;
    ensure!(code == 2 && err.contains("key=value"), "exit {code}: {err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_on_a_dir_that_holds_no_store_says_so_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("nope");
    let (code, out, err) = troupe(&["recover", "--data-dir", &missing.display().to_string()], &[]).await?;
    ensure!(code != 0 && out.is_empty(), "exit {code}: {out}{err}");
    ensure!(
        err.contains("holds no node's store") && err.matches("troupe.redb").count() == 1,
        "{err}"
    );
    Ok(())
}

//! The README's and the docs' shell blocks run as a reader would paste them, so they cannot
//! drift from the binary: the README's on a fresh node the test starts (its URL, data dir
//! and binary put in place of `127.0.0.1:8080`, `troupe-data` and `./target/release/troupe`,
//! and in the command line's defaults),
//! docs/faults.md's on the node its own first block starts. The blocks of a file run in one
//! shell, in order, stopping at the first command that fails; every JSON answer must carry
//! no error, and one a ```json block shows must have at least that block's fields. A block
//! right after `<!-- not run: why -->` is skipped (the reason is in the doc); after
//! `<!-- expect: CODE -->` its answer must be that error.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::support::{free_port, Node, NodeOpts, WAIT};

struct Block {
    line: usize,
    text: String,
    skip: Option<String>,
    expect: Option<String>,
    /// The ```json block right after it: what its answer looks like.
    answer: Option<Value>,
}

fn blocks(file: &str) -> Result<Vec<Block>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let markdown = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let lines: Vec<&str> = markdown.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "```sh" {
            i += 1;
            continue;
        }
        let before = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .copied()
            .unwrap_or("");
        let note = |tag: &str| {
            let inner = before.trim().strip_prefix("<!--")?.strip_suffix("-->")?.trim();
            inner.strip_prefix(tag).map(|r| r.trim().to_owned())
        };
        let start = i + 1;
        let end = start
            + lines[start..]
                .iter()
                .position(|l| l.trim() == "```")
                .context("an open block")?;
        let after = lines[end + 1..]
            .iter()
            .position(|l| !l.trim().is_empty())
            .map(|p| end + 1 + p);
        let answer = match after {
            Some(a) if lines[a].trim() == "```json" => {
                let close = a + 1 + lines[a + 1..].iter().position(|l| l.trim() == "```").context("json")?;
                serde_json::from_str(&lines[a + 1..close].join("\n")).ok()
            }
            _ => None,
        };
        out.push(Block {
            line: start,
            text: lines[start..end].join("\n"),
            skip: note("not run:"),
            expect: note("expect:"),
            answer,
        });
        i = end + 1;
    }
    Ok(out)
}

/// Whether `got` has every field `want` has, at every depth (values aside).
fn has_fields(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w.iter().all(|(k, v)| g.get(k).is_some_and(|gv| has_fields(v, gv))),
        (Value::Array(w), Value::Array(g)) => match (w.first(), g.first()) {
            (Some(w), Some(g)) => has_fields(w, g),
            _ => true,
        },
        (Value::Object(_), _) => false,
        _ => true,
    }
}

/// Runs the file's blocks (after `rewrite`) in one shell; checks each one's answers.
async fn run(file: &str, rewrite: impl Fn(&str) -> String, home: &Path, env: &[(&str, String)]) -> Result<usize> {
    let blocks = blocks(file)?;
    let mut script = String::from("set -e -o pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n");
    let run: Vec<&Block> = blocks.iter().filter(|b| b.skip.is_none()).collect();
    for (n, b) in run.iter().enumerate() {
        script.push_str(&format!(
            "printf '\\n::block {n}\\n'\n{}\nprintf '\\n::done {n}\\n'\n",
            rewrite(&b.text)
        ));
    }
    let out = tokio::time::timeout(
        WAIT * 4,
        tokio::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("HOME", home)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{file}'s blocks did not end"))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (n, b) in run.iter().enumerate() {
        let Some(from) = stdout.find(&format!("::block {n}\n")) else {
            bail!("{file}:{} never ran: {stdout}\n{stderr}", b.line);
        };
        let Some(to) = stdout.find(&format!("::done {n}\n")) else {
            bail!("{file}:{}: a command failed:\n{}\n{stderr}", b.line, &stdout[from..]);
        };
        let answers: Vec<Value> = stdout[from..to]
            .lines()
            .filter(|l| l.trim_start().starts_with('{'))
            // curl prints no newline: two answers may share a line.
            .flat_map(|l| {
                serde_json::Deserializer::from_str(l.trim())
                    .into_iter::<Value>()
                    .map_while(Result::ok)
            })
            .collect();
        let errors: Vec<&Value> = answers.iter().filter(|a| a.get("errors").is_some()).collect();
        match &b.expect {
            None => ensure!(errors.is_empty(), "{file}:{}: {errors:?}", b.line),
            Some(code) => ensure!(
                errors.iter().any(|e| e.to_string().contains(code.as_str())),
                "{file}:{}: expected {code}, got {answers:?}",
                b.line
            ),
        }
        if let Some(want) = &b.answer {
            ensure!(
                answers.iter().any(|a| has_fields(want, a)),
                "{file}:{}: no answer has the fields the doc shows ({want}): {answers:?}",
                b.line
            );
        }
    }
    ensure!(out.status.success(), "{file}: {stderr}");
    Ok(run.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_and_the_docs_shell_blocks_run_as_written() -> Result<()> {
    let node = Node::start(NodeOpts::named("tour")).await?;
    let home = tempfile::tempdir()?;
    let bin = env!("CARGO_BIN_EXE_troupe");
    let data = node.data_dir().display().to_string();
    let url = format!("http://{}", node.addr);
    let readme = |text: &str| {
        text.replace("http://127.0.0.1:8080", &url)
            .replace("troupe-data", &data)
            .replace("./target/release/troupe", bin)
    };
    // The command line's defaults (the node on 8080, ./troupe-data) point at this node.
    let defaults = [("TROUPE_URL", url.clone()), ("TROUPE_DATA_DIR", data.clone())];
    let ran = run("README.md", readme, home.path(), &defaults).await?;
    ensure!(ran >= 14, "only {ran} of the README's blocks ran");

    let chaos = tempfile::tempdir()?;
    let port = free_port()?;
    let dir = chaos.path().display().to_string();
    let faults = |text: &str| {
        text.replace(
            "--data-dir /tmp/chaos",
            &format!("--data-dir {dir} --listen 127.0.0.1:{port} --cluster-listen 127.0.0.1:0"),
        )
        .replace("/tmp/chaos", &dir)
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("./target/release/troupe", bin)
    };
    let ran = run("docs/faults.md", faults, home.path(), &[]).await?;
    ensure!(ran == 3, "docs/faults.md ran {ran} blocks");
    Ok(())
}

#[test]
fn a_block_is_read_with_its_note_and_its_answer() -> Result<()> {
    let readme = blocks("README.md")?;
    ensure!(readme.iter().any(|b| b.expect.as_deref() == Some("FORBIDDEN")));
    ensure!(readme.iter().any(|b| b.skip.is_some()) && readme.iter().any(|b| b.answer.is_some()));
    let want: Value = serde_json::json!({ "data": { "task": { "id": "x", "state": "y" } } });
    ensure!(has_fields(
        &want,
        &serde_json::json!({ "data": { "task": { "id": 1, "state": 2, "more": 3 } } })
    ));
    ensure!(!has_fields(
        &want,
        &serde_json::json!({ "data": { "task": { "id": 1 } } })
    ));
    Ok(())
}

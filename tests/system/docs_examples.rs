//! The docs' GraphQL examples run verbatim on a fresh node, file by file in document order,
//! each with the variables of the JSON block that follows it, if one does. Every query and
//! mutation that needs nothing of the reader's (no `<…>` or `…` placeholder, no variables it
//! does not show) must answer without errors, except where [`EXPECTED`] says otherwise.
//! Every example, these too, is also parsed and validated against the schema by the
//! gateway's unit test `every_graphql_example_in_the_docs_is_valid_against_the_schema`.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::support::{error_code, Node, NodeOpts};

/// What an example answers on a lone fresh node when it is not plain success.
enum Outcome {
    /// Not run here, for the reason given.
    Skipped,
    /// An error with this code: the docs' story has what a fresh node lacks.
    Code(&'static str),
}

/// By a piece of the example's text.
const EXPECTED: [(&str, Outcome, &str); 9] = [
    (
        "addHost(",
        Outcome::Skipped,
        "it would connect to this machine's own libvirtd",
    ),
    (
        "https://",
        Outcome::Skipped,
        "its agent would reach a service off this machine",
    ),
    (
        "node: \"second\"",
        Outcome::Code("INVALID_INPUT"),
        "a lone node has no peer named second",
    ),
    (
        "events(after: 40",
        Outcome::Code("INVALID_INPUT"),
        "the cursor is past a fresh node's log",
    ),
    (
        "(node: \"c\"",
        Outcome::Code("NOT_FOUND"),
        "a lone node has no member named c",
    ),
    (
        "/usr/local/bin/thumbnail",
        Outcome::Code("INVALID_INPUT"),
        "the program is the docs' story, not on this machine",
    ),
    (
        "$key: String) { spawnAgent(",
        Outcome::Code("INVALID_INPUT"),
        "its variables name /usr/local/bin/resize, the docs' story, not on this machine",
    ),
    (
        "(id: \"0193",
        Outcome::Code("NOT_FOUND"),
        "the id is one of the docs' story",
    ),
    (
        "mcpServers: [\"files\"]",
        Outcome::Code("INVALID_INPUT"),
        "the files agent it names runs the reader's <python>, which no example here spawns",
    ),
];

/// The ```graphql blocks of one file, in order, each with the JSON block right after it
/// when that block is its variables (not an answer: no `data` or `errors`).
fn blocks(file: &str) -> Result<Vec<(String, Value)>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let markdown = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let mut found: Vec<(String, String)> = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in markdown.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (open.as_mut(), fence) {
            (None, Some(kind)) => open = Some((kind.to_string(), String::new())),
            (None, None) => {}
            (Some(_), Some(_)) => found.extend(open.take()),
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    let mut out = Vec::new();
    for (i, (kind, text)) in found.iter().enumerate() {
        if kind != "graphql" {
            continue;
        }
        let variables = found
            .get(i + 1)
            .filter(|(kind, _)| kind == "json")
            .and_then(|(_, text)| serde_json::from_str::<Value>(text).ok())
            .filter(|v| v.get("data").is_none() && v.get("errors").is_none())
            .unwrap_or_else(|| json!({}));
        out.push((text.clone(), variables));
    }
    Ok(out)
}

/// A block's operations: each ends where its outermost braces close (strings and comments
/// skipped). Type excerpts have no place here.
fn operations(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut current, mut depth, mut in_string, mut in_comment) = (String::new(), 0usize, false, false);
    let mut escaped = false;
    for c in block.chars() {
        current.push(c);
        match c {
            _ if in_comment => in_comment = c != '\n',
            _ if in_string => {
                in_string = escaped || c != '"';
                escaped = !escaped && c == '\\';
            }
            '#' => in_comment = true,
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    out.push(std::mem::take(&mut current));
                }
            }
            _ => {}
        }
    }
    out.retain(|o| {
        let first = o
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim())
            .find(|l| !l.is_empty())
            .unwrap_or_default();
        ["{", "query", "mutation"].iter().any(|w| first.starts_with(w))
    });
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_examples_run_verbatim_on_a_fresh_node() -> Result<()> {
    let mut failed = Vec::new();
    let mut ran = 0;
    for file in [
        "README.md",
        "docs/agent-protocol.md",
        "docs/alerts.md",
        "docs/agents.md",
        "docs/exec-protocol.md",
        "docs/graphql.md",
        "docs/llm-agents.md",
        "docs/mcp.md",
        "docs/semantics.md",
        "docs/swarms.md",
        "docs/vms.md",
        "docs/work.md",
    ] {
        // Named as the docs' node is, so the ids of their story name this node.
        let node = Node::start(NodeOpts::named("ws-17")).await?;
        for (block, variables) in blocks(file)? {
            for operation in operations(&block) {
                let declares = operation.split('{').next().is_some_and(|head| head.contains('$'));
                let placeholder = operation.contains('<') || operation.contains('…');
                if placeholder || (declares && variables == json!({})) {
                    continue;
                }
                let expected = EXPECTED.iter().find(|(piece, _, _)| operation.contains(piece));
                let want = match expected {
                    Some((_, Outcome::Skipped, _)) => continue,
                    Some((_, Outcome::Code(code), _)) => Some(*code),
                    None => None,
                };
                ran += 1;
                let body = node.gql(&operation, variables.clone()).await?;
                let errors = body["errors"].as_array().is_some_and(|e| !e.is_empty());
                let ok = match want {
                    None => !errors,
                    Some(code) => error_code(&body).as_deref() == Some(code),
                };
                if !ok {
                    failed.push(format!("{file}: {}\n  want {want:?}, got {body}", operation.trim()));
                }
            }
        }
    }
    ensure!(ran >= 20, "only {ran} examples ran");
    ensure!(failed.is_empty(), "examples that fail:\n{}", failed.join("\n"));
    Ok(())
}

//! Every ```graphql example in README.md and docs/*.md, checked against the real schema.
//!
//! An operation must parse, pass async-graphql's validation (unknown fields, wrong argument
//! names or types, a missing required argument all fail it) and the gateway's own limits. A
//! block that lists several operations, one per example, is checked operation by operation.
//! A type or input excerpt must name real types and fields, with their real types.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::parser::parse_schema;
use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
use async_graphql::{ServerError, ValidationResult};

use super::*;

/// Ends a request once it passed validation, so nothing runs and no node is needed.
struct StopAfterValidation;

const VALID: &str = "validated; not run";

impl ExtensionFactory for StopAfterValidation {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(StopAfterValidation)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for StopAfterValidation {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await?;
        Err(vec![ServerError::new(VALID, None)])
    }
}

/// One ```graphql block: where it starts and what it holds.
struct Block {
    place: String,
    text: String,
}

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ is readable")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.insert(0, root.join("README.md"));
    docs
}

fn blocks(path: &Path) -> Vec<Block> {
    let markdown = std::fs::read_to_string(path).expect("the document is readable");
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut found = Vec::new();
    let mut open: Option<Block> = None;
    for (number, line) in markdown.lines().enumerate() {
        match open.as_mut() {
            None if line.trim_start() == "```graphql" => {
                open = Some(Block {
                    place: format!("{name}:{}", number + 1),
                    text: String::new(),
                });
            }
            None => {}
            Some(_) if line.trim_start().starts_with("```") => found.extend(open.take()),
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
        }
    }
    found
}

/// The block's top-level definitions, each with its text: a definition ends where its
/// outermost braces close. Strings and comments are skipped over.
fn definitions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        current.push(c);
        match c {
            '#' => {
                for c in chars.by_ref() {
                    current.push(c);
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    current.push(c);
                    match c {
                        '\\' => current.extend(chars.next()),
                        '"' => break,
                        _ => {}
                    }
                }
            }
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
    // What follows the last definition is only comments, unless the block is broken.
    if !first_word(&current).is_empty() || current.contains(['{', '}']) {
        out.push(current);
    }
    out
}

/// The first word that is not in a comment.
fn first_word(text: &str) -> &str {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .find(|l| !l.is_empty())
        .and_then(|l| l.split(|c: char| !c.is_alphanumeric() && c != '_').next())
        .unwrap_or_default()
}

const SDL_WORDS: [&str; 8] = [
    "type",
    "input",
    "enum",
    "scalar",
    "interface",
    "union",
    "schema",
    "directive",
];

/// Each type of the real schema: its kind and its members (fields, input fields or enum
/// values) with their types as written in SDL.
type Members = HashMap<String, (&'static str, HashMap<String, String>)>;

fn members(sdl: &str) -> Result<Members, String> {
    let document = parse_schema(sdl).map_err(|e| e.to_string())?;
    let mut out = Members::new();
    for definition in document.definitions {
        let TypeSystemDefinition::Type(ty) = definition else {
            continue;
        };
        let ty = ty.node;
        let (kind, members): (&'static str, HashMap<String, String>) = match ty.kind {
            TypeKind::Object(o) => (
                "type",
                o.fields
                    .iter()
                    .map(|f| (f.node.name.node.to_string(), f.node.ty.node.to_string()))
                    .collect(),
            ),
            TypeKind::Interface(i) => (
                "interface",
                i.fields
                    .iter()
                    .map(|f| (f.node.name.node.to_string(), f.node.ty.node.to_string()))
                    .collect(),
            ),
            TypeKind::InputObject(i) => (
                "input",
                i.fields
                    .iter()
                    .map(|f| (f.node.name.node.to_string(), f.node.ty.node.to_string()))
                    .collect(),
            ),
            TypeKind::Enum(e) => (
                "enum",
                e.values
                    .iter()
                    .map(|v| (v.node.value.node.to_string(), String::new()))
                    .collect(),
            ),
            TypeKind::Scalar => ("scalar", HashMap::new()),
            TypeKind::Union(_) => ("union", HashMap::new()),
        };
        out.insert(ty.name.node.to_string(), (kind, members));
    }
    Ok(out)
}

/// A type excerpt: every type it shows exists with that kind, and every member it shows
/// exists with that type.
fn check_excerpt(text: &str, real: &Members) -> Result<(), String> {
    let excerpt = members(text)?;
    let mut wrong = Vec::new();
    for (name, (kind, shown)) in &excerpt {
        let Some((real_kind, real_members)) = real.get(name) else {
            wrong.push(format!("no type {name}"));
            continue;
        };
        if kind != real_kind {
            wrong.push(format!("{name} is an {real_kind}, not an {kind}"));
        }
        for (member, ty) in shown {
            match real_members.get(member) {
                None => wrong.push(format!("{name} has no {member}")),
                Some(real_ty) if real_ty != ty => wrong.push(format!("{name}.{member} is {real_ty}, not {ty}")),
                Some(_) => {}
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

/// An operation: it parses, fits the gateway's limits and passes validation.
async fn check_operation(schema: &TroupeSchema, text: &str) -> Result<(), String> {
    let mut request = async_graphql::Request::new(text);
    prepare(&mut request).map_err(|e| e.message)?;
    let response = schema.execute(request).await;
    let problems: Vec<String> = response
        .errors
        .into_iter()
        .map(|e| e.message)
        .filter(|m| m != VALID)
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Every problem found in one block, each with the block's place.
async fn check_block(block: &Block, schema: &TroupeSchema, real: &Members) -> Vec<String> {
    let mut problems = Vec::new();
    if SDL_WORDS.contains(&first_word(&block.text)) {
        if let Err(e) = check_excerpt(&block.text, real) {
            problems.push(format!("{}: {e}", block.place));
        }
        return problems;
    }
    let (fragments, operations): (Vec<String>, Vec<String>) = definitions(&block.text)
        .into_iter()
        .partition(|d| first_word(d) == "fragment");
    if operations.is_empty() {
        problems.push(format!("{}: no operation", block.place));
    }
    for operation in operations {
        let document = format!("{operation}\n{}", fragments.join("\n"));
        if let Err(e) = check_operation(schema, &document).await {
            problems.push(format!("{}: {e}\n{}", block.place, operation.trim()));
        }
    }
    problems
}

#[tokio::test]
async fn every_graphql_example_in_the_docs_is_valid_against_the_schema() {
    let schema = builder().extension(StopAfterValidation).finish();
    let real = members(&sdl()).expect("the schema's SDL parses");
    let mut checked = 0;
    let mut problems = Vec::new();
    for path in documents() {
        for block in blocks(&path) {
            checked += 1;
            problems.extend(check_block(&block, &schema, &real).await);
        }
    }
    assert!(checked > 40, "only {checked} ```graphql blocks found");
    assert!(problems.is_empty(), "broken examples:\n\n{}", problems.join("\n\n"));
}

/// The check itself: it must fail what a user's request would fail.
#[tokio::test]
async fn the_example_check_refuses_unknown_fields_wrong_arguments_and_wrong_types() {
    let schema = builder().extension(StopAfterValidation).finish();
    let real = members(&sdl()).expect("the schema's SDL parses");
    let good = "{ node { name } }\nmutation { stopAgent(id: \"a\") { id } }";
    let bad = [
        "{ node { nope } }",
        "mutation { stopAgent(agent: \"a\") { id } }",
        "{ tasks(first: \"ten\") { totalCount } }",
        "mutation { sendMessage(to: \"a\", payload: { \"question\": \"status?\" }) { id } }",
        "type Task { id: String! }",
        "type Task { nope: ID! }",
        "input Task { id: ID! }",
    ];
    let block = |text: &str| Block {
        place: "test".into(),
        text: text.into(),
    };
    let problems = check_block(&block(good), &schema, &real).await;
    assert!(problems.is_empty(), "{problems:?}");
    for text in bad {
        let problems = check_block(&block(text), &schema, &real).await;
        assert!(!problems.is_empty(), "`{text}` passed");
    }
}

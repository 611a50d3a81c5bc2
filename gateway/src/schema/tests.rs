//! The schema as tools see it: the committed SDL, introspection, and the limits.

use super::*;

#[test]
fn the_committed_sdl_matches_the_code() {
    let committed = include_str!("../../schema.graphql");
    let now = sdl();
    if committed != now {
        let first = committed
            .lines()
            .zip(now.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(now.lines().count()));
        panic!(
            "gateway/schema.graphql is out of date (first difference at line {}); regenerate it with \
             `cargo run -- schema > gateway/schema.graphql`",
            first + 1
        );
    }
}

#[test]
fn one_of_inputs_are_marked_in_the_sdl() {
    assert!(sdl().contains("input BackendInput @oneOf"), "{}", sdl());
}

/// Runs a query as the gateway does, on a schema with no node behind it: enough to parse,
/// validate and introspect.
async fn run(query: &str) -> async_graphql::Response {
    let mut request = async_graphql::Request::new(query);
    if let Err(e) = prepare(&mut request) {
        return async_graphql::Response::from_errors(vec![e]);
    }
    builder().finish().execute(request).await
}

#[tokio::test]
async fn the_standard_introspection_query_works_with_the_limits_on() {
    let query = include_str!("introspection.graphql");
    let response = run(query).await;
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    let data = response.data.into_json().unwrap();
    let types = data["__schema"]["types"].as_array().unwrap();
    assert!(types.iter().any(|t| t["name"] == "Agent"));
    assert!(types.iter().any(|t| t["name"] == "Int64" && t["kind"] == "SCALAR"));
}

#[tokio::test]
async fn an_ordinary_query_nested_too_deep_is_refused() {
    // supervisionTree, then children/supervisor pairs, then id: 13 fields deep.
    let mut deep = String::from("{ supervisionTree {");
    for _ in 0..5 {
        deep.push_str(" children { supervisor {");
    }
    deep.push_str(" children { id }");
    deep.push_str(&" } }".repeat(5));
    deep.push_str(" } }");
    let response = run(&deep).await;
    assert_eq!(response.errors.len(), 1, "{:?}", response.errors);
    assert!(
        response.errors[0].message.contains("nests 13 fields deep"),
        "{}",
        response.errors[0].message
    );
    let shallow = "{ supervisionTree { children { supervisor { children { id } } } } }";
    let response = run(shallow).await;
    assert!(
        !response.errors.iter().any(|e| e.message.contains("deep")),
        "{:?}",
        response.errors
    );
}

#[tokio::test]
async fn page_sizes_multiply_so_aliased_big_pages_are_refused() {
    let one = "{ tasks(first: 500) { nodes { id payload result } } }";
    let response = run(one).await;
    assert!(
        !response.errors.iter().any(|e| e.message.contains("complex")),
        "{:?}",
        response.errors
    );
    let two =
        "{ a: tasks(first: 500) { nodes { id payload result } } b: tasks(first: 500) { nodes { id payload result } } }";
    let response = run(two).await;
    assert!(
        response.errors.iter().any(|e| e.message.contains("complex")),
        "{:?}",
        response.errors
    );
}

fn code(error: &async_graphql::ServerError) -> Option<String> {
    let value = error.extensions.as_ref()?.get("code")?;
    Some(value.to_string().trim_matches('"').to_string())
}

#[tokio::test]
async fn fragments_that_inline_past_the_budget_are_refused_before_validation() {
    // async-graphql's own checks walk fragments inline at every spread: a 30-level chain
    // would keep them busy for minutes, so ours must refuse it first.
    let mut query = String::from("query { ...F30 }\nfragment F0 on Query { node { name } }\n");
    for level in 1..=30 {
        query.push_str(&format!(
            "fragment F{level} on Query {{ ...F{0} ...F{0} }}\n",
            level - 1
        ));
    }
    let response = run(&query).await;
    assert_eq!(response.errors.len(), 1, "{:?}", response.errors);
    assert!(
        response.errors[0]
            .message
            .contains("selections once its fragments are inlined"),
        "{}",
        response.errors[0].message
    );
    assert_eq!(code(&response.errors[0]).as_deref(), Some("INVALID_INPUT"));
}

#[tokio::test]
async fn a_syntax_error_is_refused_with_invalid_input() {
    let mut request = async_graphql::Request::new("{ agents { ");
    let error = prepare(&mut request).unwrap_err();
    assert_eq!(code(&error).as_deref(), Some("INVALID_INPUT"), "{error:?}");
}

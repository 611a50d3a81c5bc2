//! Troupe as an MCP server: `/mcp` (streamable HTTP, through `rmcp`) offers what an operator
//! does, as tools a coding agent can call. Each tool is a GraphQL operation run on this
//! node's schema with the caller's token, so the same roles, validation and errors apply:
//! a viewer's token lists every tool and may call the reading ones; a call its role may not
//! make is an error result naming the role it needs.
//!
//! The bearer token is checked before rmcp sees the request (a missing or bad one is a
//! 401); the caller rides in the request's extensions to the tool call.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::Variables;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Map, Value};
use troupe_actors::Api;

use crate::auth::Caller;
use crate::schema::TroupeSchema;

/// The longest `submit_task` waits for its task's result.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// Its wait when the call names none.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// One tool: its name, what it does, its arguments' schema, and the GraphQL operation it
/// runs (its variables are the call's arguments, by name).
struct Operation {
    name: &'static str,
    description: &'static str,
    schema: fn() -> Value,
    document: &'static str,
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required })
}

/// A task as the tools answer it.
const GET_TASK: &str = "query($id: ID!) { task(id: $id) { id state agentId capability attempts result error } }";

fn operations() -> Vec<Operation> {
    vec![
        Operation {
            name: "spawn_agent",
            description: "Spawns an agent. `input` is GraphQL's SpawnAgentInput, e.g. {\"name\": \"echo\", \"backend\": {\"builtin\": {\"kind\": \"echo\"}}, \"capabilities\": [\"echo\"]}.",
            schema: || object(json!({ "input": { "type": "object" } }), &["input"]),
            document: "mutation($input: SpawnAgentInput!) { spawnAgent(input: $input) { id name node state capabilities } }",
        },
        Operation {
            name: "stop_agent",
            description: "Stops an agent (gracefully: its running tasks finish first).",
            schema: || object(json!({ "id": { "type": "string" } }), &["id"]),
            document: "mutation($id: ID!) { stopAgent(id: $id) { id name state } }",
        },
        Operation {
            name: "list_agents",
            description: "Lists the cluster's agents, optionally those with a capability or in a state.",
            schema: || {
                object(
                    json!({ "capability": { "type": "string" }, "state": { "type": "string" }, "first": { "type": "integer" } }),
                    &[],
                )
            },
            document: "query($capability: String, $state: AgentState, $first: Int) { agents(capability: $capability, state: $state, first: $first) { totalCount nodes { id name node state capabilities runningTasks restarts lastError } } }",
        },
        Operation {
            name: "submit_task",
            description: "Submits a task and, with wait (default true), waits for its end (timeoutMs, default 60000, at most 600000). `input` is GraphQL's SubmitTaskInput, e.g. {\"capability\": \"echo\", \"payload\": {\"text\": \"hi\"}}.",
            schema: || {
                object(
                    json!({ "input": { "type": "object" }, "wait": { "type": "boolean" }, "timeoutMs": { "type": "integer" } }),
                    &["input"],
                )
            },
            document: "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id state agentId capability attempts result error } }",
        },
        Operation {
            name: "get_task",
            description: "A task: its state, result or error.",
            schema: || object(json!({ "id": { "type": "string" } }), &["id"]),
            document: GET_TASK,
        },
        Operation {
            name: "create_swarm",
            description: "Creates a swarm. `input` is GraphQL's CreateSwarmInput.",
            schema: || object(json!({ "input": { "type": "object" } }), &["input"]),
            document: "mutation($input: CreateSwarmInput!) { createSwarm(input: $input) { id name node status statusReason size } }",
        },
        Operation {
            name: "submit_swarm_task",
            description: "Gives a swarm a task. `input` is GraphQL's SubmitSwarmTaskInput.",
            schema: || object(json!({ "id": { "type": "string" }, "input": { "type": "object" } }), &["id", "input"]),
            document: "mutation($id: ID!, $input: SubmitSwarmTaskInput!) { submitSwarmTask(id: $id, input: $input) { id swarmId mode state result error } }",
        },
        Operation {
            name: "swarm_memory_get",
            description: "Reads a swarm's memory: the live keys starting with `prefix` (a whole key reads that one).",
            schema: || object(json!({ "id": { "type": "string" }, "prefix": { "type": "string" } }), &["id"]),
            document: "query($id: ID!, $prefix: String! = \"\") { swarm(id: $id) { memory(prefix: $prefix) { key value version expiresAt } } }",
        },
        Operation {
            name: "swarm_memory_set",
            description: "Writes a key of a swarm's memory; with expectVersion, only if the key is at that version (compare-and-set; 0: it must not exist).",
            schema: || {
                object(
                    json!({ "id": { "type": "string" }, "key": { "type": "string" }, "value": {}, "expectVersion": { "type": "integer" }, "ttlMs": { "type": "integer" } }),
                    &["id", "key", "value"],
                )
            },
            document: "mutation($id: ID!, $key: String!, $value: JSON!, $expectVersion: Int64, $ttlMs: Int64) { setSwarmMemory(id: $id, key: $key, value: $value, expectVersion: $expectVersion, ttlMs: $ttlMs) { key value version } }",
        },
        Operation {
            name: "read_events",
            description: "Reads the cluster's events after a sequence number, optionally of some kinds or only those about one entity (subject: its id).",
            schema: || {
                object(
                    json!({ "after": { "type": "integer" }, "kinds": { "type": "array", "items": { "type": "string" } }, "subject": { "type": "string" }, "first": { "type": "integer" } }),
                    &[],
                )
            },
            document: "query($after: Int64, $kinds: [String!], $subject: ID, $first: Int) { events(after: $after, kinds: $kinds, subject: $subject, first: $first) { seq kind subject at data } }",
        },
    ]
}

/// The MCP service of one node.
#[derive(Clone)]
pub struct Surface {
    schema: TroupeSchema,
    api: Api,
}

impl Surface {
    /// Runs `op` with `arguments` as the caller.
    async fn run(&self, op: &Operation, arguments: Map<String, Value>, caller: Caller) -> CallToolResult {
        if let Some(missing) = required(op, &arguments).or_else(|| mistyped(op, &arguments)) {
            return CallToolResult::error(vec![ContentBlock::text(format!("INVALID_INPUT {missing}"))]);
        }
        let mut variables = arguments.clone();
        let (wait, limit) = match waiting(&arguments) {
            Ok(waiting) => waiting,
            Err(why) => return CallToolResult::error(vec![ContentBlock::text(format!("INVALID_INPUT {why}"))]),
        };
        variables.remove("wait");
        if op.name == "submit_task" {
            variables.remove("timeoutMs");
        }
        let request = async_graphql::Request::new(op.document)
            .variables(Variables::from_json(Value::Object(variables)))
            .data(caller.clone());
        let response = self.schema.execute(request).await;
        if !response.errors.is_empty() {
            let text = response
                .errors
                .iter()
                .map(|e| {
                    // An error without a code is the request's own: a missing or mistyped
                    // argument, found before anything ran.
                    let code = e
                        .extensions
                        .as_ref()
                        .and_then(|x| x.get("code"))
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "INVALID_INPUT".into());
                    format!("{} {}", code.trim_matches('"'), e.message)
                })
                .collect::<Vec<_>>()
                .join("; ");
            return CallToolResult::error(vec![ContentBlock::text(text)]);
        }
        let mut data = response.data.into_json().unwrap_or(Value::Null);
        if let Some(missing) = missing(&data, &arguments) {
            return CallToolResult::error(vec![ContentBlock::text(missing)]);
        }
        if op.name == "submit_task" && wait {
            let id = data
                .pointer("/submitTask/id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            match self.api.tasks().wait_end(&id, limit).await {
                Ok(_) => {
                    let again = async_graphql::Request::new(GET_TASK)
                        .variables(Variables::from_json(json!({ "id": id })))
                        .data(caller);
                    let read = self.schema.execute(again).await;
                    if let Ok(task) = read.data.into_json() {
                        data = json!({ "submitTask": task["task"] });
                    }
                }
                Err(e) => return CallToolResult::error(vec![ContentBlock::text(format!("{} {e}", e.code()))]),
            }
        }
        let mut result = CallToolResult::success(vec![ContentBlock::text(data.to_string())]);
        result.structured_content = Some(data);
        result
    }
}

impl ServerHandler for Surface {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("troupe", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Troupe's cluster of supervised agents: spawn and stop agents, submit tasks and wait for their results, run swarms, read and write swarm memory, read events.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = operations()
            .into_iter()
            .map(|op| {
                let Value::Object(schema) = (op.schema)() else {
                    unreachable!("every schema is an object")
                };
                Tool::new(op.name, op.description, Arc::new(schema))
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .cloned()
            .ok_or_else(|| ErrorData::internal_error("the request carries no caller", None))?;
        let Some(op) = operations().into_iter().find(|op| op.name == request.name) else {
            return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "NOT_FOUND no tool named {}",
                request.name
            ))])
            .into());
        };
        Ok(self
            .run(&op, request.arguments.unwrap_or_default(), caller)
            .await
            .into())
    }
}

/// The arguments `op`'s schema requires that the call left out (or gave as null), said as
/// the tool's.
fn required(op: &Operation, arguments: &Map<String, Value>) -> Option<String> {
    let schema = (op.schema)();
    let missing: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|k| arguments.get(*k).is_none_or(Value::is_null))
        .collect();
    match missing.as_slice() {
        [] => None,
        [one] => Some(format!("{} needs the argument {one}", op.name)),
        more => Some(format!("{} needs the arguments {}", op.name, more.join(", "))),
    }
}

/// The first argument whose JSON type is not the one `op`'s schema gives it, said as the
/// tool's (GraphQL would take the number 42 as the ID "42", and answer a read of it with
/// null, as if it named nothing).
fn mistyped(op: &Operation, arguments: &Map<String, Value>) -> Option<String> {
    let schema = (op.schema)();
    let properties = schema.get("properties")?.as_object()?;
    arguments.iter().find_map(|(name, value)| {
        let want = properties.get(name)?.get("type")?.as_str()?;
        let fits = match want {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            _ => true,
        };
        let a = if want.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        (!fits && !value.is_null()).then(|| format!("{}: {name} is {a} {want}, not {value}", op.name))
    })
}

/// A call's `wait` (default true) and `timeoutMs` (default 60 s, at most 10 minutes).
fn waiting(arguments: &Map<String, Value>) -> Result<(bool, Duration), String> {
    let wait = match arguments.get("wait") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(wait)) => *wait,
        Some(other) => return Err(format!("wait is true or false, not {other}")),
    };
    let limit = match arguments.get("timeoutMs") {
        None | Some(Value::Null) => DEFAULT_WAIT,
        Some(ms) => match ms.as_u64().map(Duration::from_millis) {
            Some(limit) if limit <= MAX_WAIT => limit,
            _ => {
                return Err(format!(
                    "timeoutMs is a number of milliseconds up to {}, not {ms}",
                    MAX_WAIT.as_millis()
                ))
            }
        },
    };
    Ok((wait, limit))
}

/// NOT_FOUND for a read of one thing by `id` that found nothing (GraphQL answers `null`).
fn missing(data: &Value, arguments: &Map<String, Value>) -> Option<String> {
    let id = arguments.get("id").and_then(Value::as_str)?;
    let mut fields = data.as_object()?.iter();
    match (fields.next(), fields.next()) {
        (Some((field, Value::Null)), None) => Some(format!("NOT_FOUND no {field} {id}")),
        _ => None,
    }
}

/// The `/mcp` service.
pub fn service(schema: TroupeSchema, api: Api) -> StreamableHttpService<Surface, LocalSessionManager> {
    let surface = Surface { schema, api };
    // Any Host: the bearer token, not the host name, is what keeps others out here.
    let config = StreamableHttpServerConfig::default().disable_allowed_hosts();
    StreamableHttpService::new(
        move || Ok(surface.clone()),
        LocalSessionManager::default().into(),
        config,
    )
}

/// A body over `body_limit_bytes` answered as JSON-RPC says an error (413, with the error
/// object an MCP client shows), not as GraphQL's.
pub async fn too_large(response: Response) -> Response {
    if response.status() != axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    let error = json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": -32600, "message": "the request body is larger than the node's body_limit_bytes" },
    });
    (axum::http::StatusCode::PAYLOAD_TOO_LARGE, axum::Json(error)).into_response()
}

/// Answers a session's end (DELETE with its `mcp-session-id`) `204 No Content`: rmcp answers
/// `202 Accepted`, which clients of the initialize era (the Python SDK among them) report
/// as a failed termination, though the session did end.
pub async fn session_ended(request: Request, next: Next) -> Response {
    let delete = request.method() == axum::http::Method::DELETE;
    let mut response = next.run(request).await;
    if delete && response.status() == axum::http::StatusCode::ACCEPTED {
        *response.status_mut() = axum::http::StatusCode::NO_CONTENT;
    }
    response
}

/// Refuses a request without a valid token (401), else lets it through with its caller.
pub async fn authorized(State(api): State<Api>, mut request: Request, next: Next) -> Response {
    match crate::auth::from_headers(&api, request.headers()).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => {
            let body = axum::Json(json!({ "error": refusal.message(), "code": refusal.code() }));
            match refusal.status() {
                axum::http::StatusCode::UNAUTHORIZED => (
                    axum::http::StatusCode::UNAUTHORIZED,
                    [("www-authenticate", "Bearer")],
                    body,
                )
                    .into_response(),
                status => (status, body).into_response(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_argument_of_another_type_than_the_tools_schema_says_is_refused() {
        let get = operations().into_iter().find(|op| op.name == "get_task").unwrap();
        let args = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(
            mistyped(&get, &args(json!({ "id": 42 }))).as_deref(),
            Some("get_task: id is a string, not 42")
        );
        assert_eq!(mistyped(&get, &args(json!({ "id": "42" }))), None);
        let set = operations()
            .into_iter()
            .find(|op| op.name == "swarm_memory_set")
            .unwrap();
        // A value of any type; a version must be an integer.
        assert_eq!(
            mistyped(&set, &args(json!({ "id": "s", "key": "k", "value": [1] }))),
            None
        );
        assert_eq!(
            mistyped(
                &set,
                &args(json!({ "id": "s", "key": "k", "value": 1, "expectVersion": "2" }))
            )
            .as_deref(),
            Some("swarm_memory_set: expectVersion is an integer, not \"2\"")
        );
    }

    /// Every tool's operation is one the schema knows: run with no variables, it may miss
    /// them, never a field, type or argument.
    #[tokio::test]
    async fn every_tools_operation_validates_against_the_schema() {
        let schema = crate::schema::build_detached();
        for op in operations() {
            let request = async_graphql::Request::new(op.document).data(Caller {
                role: troupe_runtime::auth::Role::Admin,
                token: String::new(),
            });
            let response = schema.execute(request).await;
            for e in &response.errors {
                assert!(!e.message.starts_with("Unknown"), "{}: {}", op.name, e.message);
            }
            assert!(matches!((op.schema)(), Value::Object(_)), "{}", op.name);
        }
    }
}

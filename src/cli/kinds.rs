//! The kinds of entity the command line lists and gets (agents, tasks, swarms, hosts, VMs),
//! each with the fields its table shows, and how they are read: a page at a time, one by
//! id, or one by name.

use serde_json::{json, Value};

use super::{ask, print, Client, Done, Failure, List};

/// The kinds of entity `get` and `list` know, with the fields a table shows.
pub(super) struct Kind {
    pub(super) list: &'static str,
    pub(super) one: &'static str,
    pub(super) fields: &'static [&'static str],
    /// What `get` shows besides (a task's result).
    pub(super) more: &'static [&'static str],
    /// Found by name too (a list filtered on this side).
    pub(super) named: bool,
    pub(super) paged: bool,
}

/// The most rows one request asks for (the API's largest page).
const PAGE: usize = 500;

impl Kind {
    /// The query of a page of up to `$first` of them after `$after` (the unpaged lists
    /// are whole).
    /// A paged list's query also takes `filter`'s arguments (each its name and GraphQL type).
    fn list_query(&self, filter: &[(&str, &str, Value)]) -> String {
        let fields = self.fields.join(" ");
        let declared: String = filter.iter().map(|(name, ty, _)| format!(", ${name}: {ty}")).collect();
        let passed: String = filter.iter().map(|(name, _, _)| format!(", {name}: ${name}")).collect();
        match self.paged {
            true => format!(
                "query($first: Int, $after: String{declared}) {{ {}(first: $first, after: $after{passed}) {{ nodes {{ {fields} }} pageInfo {{ hasNextPage endCursor }} }} }}",
                self.list
            ),
            false => format!("{{ {} {{ {fields} }} }}", self.list),
        }
    }

    /// Every row (at most `cap`), a page a request, following the cursor.
    pub(super) async fn all(&self, client: &Client, cap: Option<usize>) -> Result<Vec<Value>, Failure> {
        self.all_of(client, cap, &[]).await
    }

    /// Every row `filter` keeps (at most `cap`); see [`Kind::list_query`].
    pub(super) async fn all_of(
        &self,
        client: &Client,
        cap: Option<usize>,
        filter: &[(&str, &str, Value)],
    ) -> Result<Vec<Value>, Failure> {
        let mut rows = Vec::new();
        let mut after = Value::Null;
        let query = self.list_query(filter);
        loop {
            let want = cap.map_or(PAGE, |c| c.saturating_sub(rows.len()).min(PAGE));
            let mut variables = json!({ "first": want, "after": after });
            for (name, _, value) in filter {
                variables[*name] = value.clone();
            }
            let data = ask(client, &query, variables).await?;
            if !self.paged {
                rows.extend(data[self.list].as_array().cloned().unwrap_or_default());
                break;
            }
            let page = &data[self.list];
            rows.extend(page["nodes"].as_array().cloned().unwrap_or_default());
            let more = page["pageInfo"]["hasNextPage"] == json!(true);
            after = page["pageInfo"]["endCursor"].clone();
            if !more || after.is_null() || cap.is_some_and(|c| rows.len() >= c) {
                break;
            }
        }
        if let Some(cap) = cap {
            rows.truncate(cap);
        }
        Ok(rows)
    }
}

pub(super) const AGENTS: Kind = Kind {
    list: "agents",
    one: "agent",
    fields: &["id", "name", "state", "node", "capabilities", "restarts"],
    more: &["breaker { state }", "health { healthy }"],
    named: true,
    paged: true,
};
pub(super) const TASKS: Kind = Kind {
    list: "tasks",
    one: "task",
    fields: &["id", "name", "state", "agentName", "attempts", "error"],
    more: &["waitingFor", "result"],
    named: true,
    paged: true,
};
pub(super) const SWARMS: Kind = Kind {
    list: "swarms",
    one: "swarm",
    fields: &["id", "name", "status", "topology", "size", "node"],
    more: &[],
    named: true,
    paged: false,
};
pub(super) const HOSTS: Kind = Kind {
    list: "hosts",
    one: "host",
    fields: &["id", "name", "state", "node", "uri"],
    more: &[],
    named: true,
    paged: false,
};
pub(super) const VMS: Kind = Kind {
    list: "vms",
    one: "vm",
    fields: &["id", "name", "state", "hostId"],
    more: &[],
    named: true,
    paged: true,
};

pub(super) async fn list_or_get(client: &Client, kind: &Kind, how: List) -> Done {
    let fields: Vec<&str> = match how {
        List::Get { .. } => kind.fields.iter().chain(kind.more).map(|f| column(f).0).collect(),
        List::List { .. } => kind.fields.to_vec(),
    };
    let mut rows = rows_of(client, kind, how).await?;
    for row in &mut rows {
        for f in kind.more {
            // `breaker { state }` is shown as its state.
            if let (key, Some(inner)) = column(f) {
                row[key] = row[key][inner].take();
            }
        }
    }
    print(client, &fields, &Value::Array(rows));
    Ok(())
}

/// A field `get` shows besides: its column and, for a selection of one inner field
/// (`breaker { state }`), that field.
fn column(field: &str) -> (&str, Option<&str>) {
    match field.split_once('{') {
        Some((key, inner)) => (key.trim(), Some(inner.trim_end_matches('}').trim())),
        None => (field, None),
    }
}

/// The rows `list` or `get` asks for.
pub(super) async fn rows_of(client: &Client, kind: &Kind, how: List) -> Result<Vec<Value>, Failure> {
    let fields = kind.fields.join(" ");
    match how {
        List::List { first } => kind.all(client, first).await,
        List::Get { id } => {
            let more = kind.more.join(" ");
            let query = format!("query($id: ID!) {{ {}(id: $id) {{ {fields} {more} }} }}", kind.one);
            let mut found = ask(client, &query, json!({ "id": id })).await?[kind.one].clone();
            if found.is_null() && kind.named {
                found = by_name(client, kind, &id).await?;
                // Found in a list, which does not carry what only `get` shows.
                if let (false, Some(id)) = (kind.more.is_empty(), found["id"].as_str()) {
                    found = ask(client, &query, json!({ "id": id })).await?[kind.one].clone();
                }
            }
            if found.is_null() {
                let short = kind.one == "task" && !id.contains('@') && id.len() < 4;
                let hint = if short {
                    " (give at least 4 of the last characters of its id)"
                } else {
                    ""
                };
                return Err(Failure(3, format!("no {} {id}{hint}", kind.one)));
            }
            Ok(vec![found])
        }
    }
}

/// The entity of `kind` named `name`, if there is one (null if none).
pub(super) async fn by_name(client: &Client, kind: &Kind, name: &str) -> Result<Value, Failure> {
    // Agents are looked up by the server (there may be many); other lists are short.
    let rows = match kind.one {
        "agent" => {
            let fields = kind.fields.join(" ");
            let query = format!("query($name: String) {{ agents(name: $name, first: 2) {{ nodes {{ {fields} }} }} }}");
            let data = ask(client, &query, json!({ "name": name })).await?;
            data["agents"]["nodes"].as_array().cloned().unwrap_or_default()
        }
        _ => kind.all(client, None).await?,
    };
    // A task is also found by the end of its id, as its name shows it ("2a5e1c").
    let tail = |r: &Value| {
        let bare: String = r["id"]
            .as_str()
            .unwrap_or("")
            .split('@')
            .next()
            .unwrap_or("")
            .replace('-', "");
        kind.one == "task" && name.len() >= 4 && bare.ends_with(name)
    };
    let mut named = rows.iter().filter(|r| r["name"] == name || tail(r));
    match (named.next(), named.next()) {
        (Some(one), None) => Ok(one.clone()),
        (Some(_), Some(_)) => Err(Failure(
            1,
            format!("more than one {} is named {name}: give its id", kind.one),
        )),
        (None, _) => Ok(Value::Null),
    }
}

/// The id of the agent named or identified by `agent`.
pub(super) async fn agent_id(client: &Client, agent: &str) -> Result<String, Failure> {
    let found = ask(
        client,
        "query($id: ID!) { agent(id: $id) { id } }",
        json!({ "id": agent }),
    )
    .await?["agent"]
        .clone();
    let found = match found.is_null() {
        true => by_name(client, &AGENTS, agent).await?,
        false => found,
    };
    found["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Failure(3, format!("no agent {agent}")))
}

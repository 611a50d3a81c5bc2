//! Conversations an LLM agent keeps across tasks. A task that names a `session` begins
//! with what the agent's earlier tasks of that session said (each task's own messages and
//! the model's final answer: the tool calls and results between them are not kept), and
//! adds its own exchange when it answers. The kept conversation is bounded by the agent's
//! `sessionWindowTokens`, estimated at four characters a token: the oldest exchanges are
//! dropped first, whole.
//!
//! A task's start commits the conversation it began with (a [`super::Record::Context`]), so
//! a loop that starts again sends the same one whatever other tasks of the session did
//! meanwhile. An exchange is added once, however often its task's answer is read (a task
//! answered again after a restart finds its id among the exchanges kept).

use serde::{Deserialize, Serialize};
use troupe_runtime::store::{Batch, Store, StoreError};

use crate::tables::LLM_SESSIONS;

/// A session as kept: its exchanges, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub exchanges: Vec<Exchange>,
}

/// What one task of a session said and was answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub task: String,
    /// The task's messages (`user`, or as its payload named them), then the answer
    /// (`assistant`).
    pub messages: Vec<(String, String)>,
}

impl Session {
    /// The messages a task of the session begins with.
    pub fn history(&self) -> Vec<(String, String)> {
        self.exchanges.iter().flat_map(|e| e.messages.iter().cloned()).collect()
    }
}

/// Tokens, as estimated: a token per four characters, rounded up.
pub fn estimate(messages: &[(String, String)]) -> u64 {
    messages
        .iter()
        .map(|(_, c)| (c.chars().count() as u64).div_ceil(4))
        .sum()
}

fn key(agent: &str, session: &str) -> String {
    format!("{agent}/{session}")
}

/// Session `session` of `agent` as kept now (empty when it has no exchange yet).
pub async fn read(store: &Store, agent: &str, session: &str) -> Result<Session, String> {
    match store
        .get(LLM_SESSIONS, &key(agent, session))
        .await
        .map_err(|e| e.to_string())?
    {
        Some(bytes) => troupe_runtime::codec::decode(&bytes).map_err(|e| e.to_string()),
        None => Ok(Session::default()),
    }
}

/// Adds `task`'s exchange to the session (unless it is there already), dropping the oldest
/// exchanges past `window` tokens; a compare-and-set, tried again when another task of the
/// session wrote first.
pub async fn remember(
    store: &Store,
    (agent, session): (&str, &str),
    task: &str,
    messages: Vec<(String, String)>,
    window: u64,
) -> Result<(), String> {
    let key = key(agent, session);
    for _ in 0..16 {
        let before = store.get(LLM_SESSIONS, &key).await.map_err(|e| e.to_string())?;
        let mut kept: Session = match &before {
            Some(bytes) => troupe_runtime::codec::decode(bytes).map_err(|e| e.to_string())?,
            None => Session::default(),
        };
        if kept.exchanges.iter().any(|e| e.task == task) {
            return Ok(());
        }
        kept.exchanges.push(Exchange {
            task: task.to_owned(),
            messages: messages.clone(),
        });
        while kept.exchanges.len() > 1 && estimate(&kept.history()) > window {
            kept.exchanges.remove(0);
        }
        let bytes = troupe_runtime::codec::encode(&kept).map_err(|e| e.to_string())?;
        let batch = Batch::new()
            .require(LLM_SESSIONS, key.clone(), before)
            .put(LLM_SESSIONS, key.clone(), bytes);
        match store.write(batch).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Stale(_)) => continue,
            Err(e) => return Err(format!("the session could not be kept: {e}")),
        }
    }
    Err(format!(
        "the session {session} could not be kept: too many tasks of it wrote at once"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(user: &str, answer: &str) -> Vec<(String, String)> {
        vec![("user".into(), user.into()), ("assistant".into(), answer.into())]
    }

    #[tokio::test]
    async fn a_session_keeps_its_last_exchanges_within_its_window_and_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
        let at = ("a", "s");
        // 8 characters a message: 4 tokens an exchange.
        remember(&store, at, "t1", said("one 1234", "ans 1234"), 9)
            .await
            .unwrap();
        remember(&store, at, "t2", said("two 1234", "ans 5678"), 9)
            .await
            .unwrap();
        remember(&store, at, "t2", said("two 1234", "ans 5678"), 9)
            .await
            .unwrap();
        assert_eq!(read(&store, "a", "s").await.unwrap().history().len(), 4);
        remember(&store, at, "t3", said("three 12", "ans 9012"), 9)
            .await
            .unwrap();
        let kept = read(&store, "a", "s").await.unwrap();
        assert_eq!(
            kept.exchanges.iter().map(|e| e.task.as_str()).collect::<Vec<_>>(),
            ["t2", "t3"]
        );
        assert!(read(&store, "a", "other").await.unwrap().exchanges.is_empty());
        // One exchange larger than the window is kept alone rather than dropped.
        remember(&store, at, "t4", said(&"x".repeat(100), "y"), 9)
            .await
            .unwrap();
        assert_eq!(read(&store, "a", "s").await.unwrap().exchanges.len(), 1);
    }
}

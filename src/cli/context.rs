//! Contexts: named nodes an operator talks to, as kubectl's are, kept in the command line's
//! own file (`$TROUPE_CLI_CONFIG`, else `$XDG_CONFIG_HOME/troupe/cli.toml`, else
//! `~/.config/troupe/cli.toml`):
//!
//! ```toml
//! current = "prod"
//! [contexts.prod]
//! url = "https://troupe.example:8080"
//! token_file = "/home/me/.config/troupe/prod.token"
//! ```
//!
//! A flag or its environment variable (`--url`, `--token`) wins over the context, which
//! wins over the defaults (`http://127.0.0.1:8080`, the admin token in `--data-dir`). The
//! context's token file is read for its own URL only: with `--url` naming another node, the
//! token comes from `--token` or `--data-dir`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{print, Client, Done, Failure};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct File {
    /// The context used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Context {
    pub url: String,
    /// A file holding the token (kept out of this file, as a secret should be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// `troupe context`: list, use and set the named nodes.
#[derive(Subcommand, Clone)]
pub enum Contexts {
    /// The contexts, the current one marked.
    List,
    /// Make one the current context.
    Use { name: String },
    /// Add or change a context.
    Set {
        /// The context's name (`troupe context use <name>`, `--context <name>`).
        name: String,
        /// The node's address: http://host:port (or https://).
        #[arg(long = "to-url")]
        url: String,
        /// A file holding its token.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
}

/// Where the file is.
pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("TROUPE_CLI_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("troupe").join("cli.toml")
}

/// The file as it is (empty when there is none); a file that does not parse is an error
/// that names it.
pub fn read() -> Result<File, Failure> {
    let path = path();
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| Failure(2, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
        Err(e) => Err(Failure(2, format!("{}: {e}", path.display()))),
    }
}

fn write(file: &File) -> Done {
    let path = path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Failure(1, format!("{}: {e}", dir.display())))?;
    }
    let text = toml::to_string(file).map_err(|e| Failure(1, e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| Failure(1, format!("{}: {e}", path.display())))
}

/// The context `name` (or the current one when `name` is `None`); `None` when no context
/// is named and none is current. A named context that does not exist is a usage error.
pub fn chosen(name: Option<&str>) -> Result<Option<Context>, Failure> {
    let file = read()?;
    let Some(name) = name.map(str::to_owned).or(file.current.clone()) else {
        return Ok(None);
    };
    match file.contexts.get(&name) {
        Some(c) => Ok(Some(c.clone())),
        None => Err(Failure(
            2,
            format!("no context {name} in {} (troupe context list)", path().display()),
        )),
    }
}

pub(super) fn contexts(client: &Client, what: Contexts) -> Done {
    let mut file = read()?;
    match what {
        Contexts::List => {
            let rows: Vec<_> = file
                .contexts
                .iter()
                .map(|(name, c)| {
                    let current = if file.current.as_deref() == Some(name) { "*" } else { "" };
                    json!({ "current": current, "name": name, "url": c.url, "tokenFile": c.token_file })
                })
                .collect();
            print(client, &["current", "name", "url", "tokenFile"], &json!(rows));
            Ok(())
        }
        Contexts::Use { name } => {
            if !file.contexts.contains_key(&name) {
                return Err(Failure(3, format!("no context {name} in {}", path().display())));
            }
            file.current = Some(name);
            write(&file)
        }
        Contexts::Set { name, url, token_file } => {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() <= "https://".len() {
                return Err(Failure(
                    2,
                    format!("--to-url {url:?} is not a node's address: give http://host:port (or https://)"),
                ));
            }
            // Kept whole: a context is used from any directory (a relative path kept as typed
            // was looked for in the directory of each later command).
            let token_file = token_file
                .map(|f| std::path::absolute(&f))
                .transpose()
                .map_err(|e| Failure(2, format!("--token-file: {e}")))?;
            file.contexts.insert(name, Context { url, token_file });
            write(&file)
        }
    }
}

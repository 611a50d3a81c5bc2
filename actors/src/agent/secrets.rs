//! Which secrets an agent may use as its API key. An `llm` agent names its key by an
//! environment variable (`apiKeyEnv`) or a file (`apiKeyFile`) of the node, and sends it to a
//! `baseUrl` its creator chose: so the key may only come from what the node's admin listed
//! (`secret_env`, `secret_dirs`), and never from the node's own secrets (the data dir with its
//! admin token, store and cookie; the cookie file; `TROUPE_*` variables), whatever the list says.
//!
//! The decision is made twice: when the agent is created or updated (on the node that will
//! run it, so its own list applies), and again when its backend starts, where the file is
//! resolved afresh (a symbolic link placed since is judged by where it points).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::spec::{BackendSpec, SecretRef};
use crate::error::ApiError;

/// What the node's admin allows agents to use as keys.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// Names of environment variables.
    env: Vec<String>,
    /// Directories whose files (at any depth) may be keys.
    dirs: Vec<PathBuf>,
    /// Never a key's source: the data dir and the cookie file.
    forbidden: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretRefused {
    #[error("apiKeyEnv {0}: TROUPE_* variables are the node's own and never an agent's key")]
    NodeVariable(String),
    #[error("apiKeyEnv {0} is not a variable this node allows as a key (the node's secret_env lists them)")]
    EnvNotAllowed(String),
    #[error("apiKeyFile {0} is the node's own secret (its data dir or cookie file) and never an agent's key")]
    NodeFile(String),
    #[error("apiKeyFile {0} is not in a directory this node allows for keys (the node's secret_dirs lists them)")]
    FileNotAllowed(String),
    #[error("apiKeyFile {path}: {why}")]
    Unresolvable { path: String, why: String },
    #[error("the API key variable {0} is not set on this node")]
    EnvMissing(String),
    #[error("cannot read the API key file {path}: {why}")]
    Unreadable { path: String, why: String },
}

impl From<SecretRefused> for ApiError {
    fn from(e: SecretRefused) -> Self {
        match e.is_forbidden() {
            true => ApiError::Forbidden(e.to_string()),
            false => ApiError::InvalidInput(e.to_string()),
        }
    }
}

impl SecretRefused {
    /// Whether the key's name is at fault (the caller asked for what it may not have), rather
    /// than the node's environment (a key allowed but missing).
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            Self::NodeVariable(_) | Self::EnvNotAllowed(_) | Self::NodeFile(_) | Self::FileNotAllowed(_)
        )
    }
}

impl Secrets {
    /// `forbidden` are the node's own secret paths (its data dir, its cookie file).
    pub fn new(env: Vec<String>, dirs: Vec<PathBuf>, forbidden: Vec<PathBuf>) -> Self {
        Self { env, dirs, forbidden }
    }

    /// Whether an agent of this backend may name its key so; nothing is read.
    pub async fn check(&self, backend: &BackendSpec) -> Result<(), SecretRefused> {
        let key = match backend {
            BackendSpec::Llm(llm) => &llm.api_key,
            BackendSpec::Mcp(mcp) => &mcp.api_key,
            _ => return Ok(()),
        };
        match key {
            None => Ok(()),
            Some(SecretRef::Env(name)) => judge_env(name, &self.env),
            Some(SecretRef::File(path)) => {
                let (me, path) = (self.clone(), path.clone());
                blocking(move || me.allowed_file(&path).map(drop)).await
            }
        }
    }

    /// Whether the key an agent of this backend names may be used and can be read here now
    /// (a variable set, a file readable); nothing read is kept.
    pub async fn readable(&self, backend: &BackendSpec) -> Result<(), SecretRefused> {
        let key = match backend {
            BackendSpec::Llm(llm) => llm.api_key.as_ref(),
            BackendSpec::Mcp(mcp) => mcp.api_key.as_ref(),
            _ => None,
        };
        match key {
            Some(key) => self.read(key).await.map(drop),
            None => Ok(()),
        }
    }

    /// The key itself, when it may be used.
    pub async fn read(&self, key: &SecretRef) -> Result<String, SecretRefused> {
        match key {
            SecretRef::Env(name) => {
                judge_env(name, &self.env)?;
                std::env::var(name).map_err(|_| SecretRefused::EnvMissing(name.clone()))
            }
            SecretRef::File(path) => {
                let (me, path) = (self.clone(), path.clone());
                blocking(move || {
                    let real = me.allowed_file(&path)?;
                    read_no_follow(&real)
                        .map(|s| s.trim().to_owned())
                        .map_err(|e| SecretRefused::Unreadable {
                            path: path.clone(),
                            why: e.to_string(),
                        })
                })
                .await
            }
        }
    }

    /// The file `path` names, with every link resolved, if it may be a key.
    fn allowed_file(&self, path: &str) -> Result<PathBuf, SecretRefused> {
        let unresolvable = |why: String| SecretRefused::Unresolvable {
            path: path.to_owned(),
            why,
        };
        let real = resolve(Path::new(path)).map_err(unresolvable)?;
        // A directory that cannot be resolved allows nothing; a forbidden one that cannot be
        // resolved is still compared as written.
        let allowed: Vec<PathBuf> = self.dirs.iter().filter_map(|d| d.canonicalize().ok()).collect();
        let forbidden: Vec<PathBuf> = self
            .forbidden
            .iter()
            .map(|f| resolve(f).unwrap_or_else(|_| f.clone()))
            .collect();
        judge_file(path, &real, &allowed, &forbidden)?;
        Ok(real)
    }
}

/// An environment variable may be a key when the admin listed it, and never a `TROUPE_*` one.
pub fn judge_env(name: &str, allowed: &[String]) -> Result<(), SecretRefused> {
    if name.to_ascii_uppercase().starts_with("TROUPE_") {
        return Err(SecretRefused::NodeVariable(name.to_owned()));
    }
    if !allowed.iter().any(|a| a == name) {
        return Err(SecretRefused::EnvNotAllowed(name.to_owned()));
    }
    Ok(())
}

/// A file (resolved to `real`) may be a key when it is inside an allowed directory and inside
/// no forbidden path; forbidden wins. Every path here is already resolved.
pub fn judge_file(named: &str, real: &Path, allowed: &[PathBuf], forbidden: &[PathBuf]) -> Result<(), SecretRefused> {
    if forbidden.iter().any(|f| real.starts_with(f)) {
        return Err(SecretRefused::NodeFile(named.to_owned()));
    }
    if !allowed.iter().any(|d| real.starts_with(d)) {
        return Err(SecretRefused::FileNotAllowed(named.to_owned()));
    }
    Ok(())
}

/// The absolute path with every symbolic link resolved; a file not there yet is judged by
/// where it would be (its longest existing ancestor resolved, the rest appended).
fn resolve(path: &Path) -> Result<PathBuf, String> {
    let absolute = match path.is_absolute() {
        true => path.to_path_buf(),
        false => std::env::current_dir().map_err(|e| e.to_string())?.join(path),
    };
    let mut rest = Vec::new();
    let mut at = absolute.as_path();
    loop {
        match at.canonicalize() {
            Ok(mut real) => {
                real.extend(rest.iter().rev());
                return Ok(real);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // `..` after a missing directory cannot be resolved without guessing (it has
                // no file name).
                let (Some(name), Some(parent)) = (at.file_name(), at.parent()) else {
                    return Err("the path cannot be resolved".into());
                };
                rest.push(name.to_owned());
                at = parent;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Reads a resolved file without following a link put in its place since.
fn read_no_follow(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SecretRefused> + Send + 'static,
) -> Result<T, SecretRefused> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(SecretRefused::Unresolvable {
            path: String::new(),
            why: format!("the check did not finish: {e}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::spec::LlmBackend;

    fn llm(key: SecretRef) -> BackendSpec {
        BackendSpec::Llm(LlmBackend {
            api_key: Some(key),
            max_retries: 0,
            ..LlmBackend::to("http://127.0.0.1:1", "m")
        })
    }

    #[test]
    fn only_listed_variables_and_never_troupe_ones_may_be_keys() {
        let allowed = vec!["OPENAI_API_KEY".to_string(), "TROUPE_COOKIE".to_string()];
        assert_eq!(judge_env("OPENAI_API_KEY", &allowed), Ok(()));
        assert!(matches!(
            judge_env("HOME", &allowed),
            Err(SecretRefused::EnvNotAllowed(_))
        ));
        // Listed or not, the node's own variables stay its own.
        assert!(matches!(
            judge_env("TROUPE_COOKIE", &allowed),
            Err(SecretRefused::NodeVariable(_))
        ));
        assert!(matches!(
            judge_env("troupe_cookie", &allowed),
            Err(SecretRefused::NodeVariable(_))
        ));
        assert!(matches!(
            judge_env("OPENAI_API_KEY", &[]),
            Err(SecretRefused::EnvNotAllowed(_))
        ));
    }

    #[test]
    fn a_file_must_be_in_an_allowed_dir_and_in_no_forbidden_one() {
        let allowed = vec![PathBuf::from("/keys"), PathBuf::from("/srv")];
        let forbidden = vec![PathBuf::from("/srv/troupe-data"), PathBuf::from("/etc/cookie")];
        assert_eq!(judge_file("k", Path::new("/keys/openai"), &allowed, &forbidden), Ok(()));
        assert_eq!(judge_file("k", Path::new("/keys/a/b"), &allowed, &forbidden), Ok(()));
        assert!(matches!(
            judge_file("k", Path::new("/keysX/openai"), &allowed, &forbidden),
            Err(SecretRefused::FileNotAllowed(_))
        ));
        assert!(matches!(
            judge_file("k", Path::new("/srv/troupe-data/admin.token"), &allowed, &forbidden),
            Err(SecretRefused::NodeFile(_))
        ));
        assert!(matches!(
            judge_file("k", Path::new("/etc/cookie"), &[PathBuf::from("/")], &forbidden),
            Err(SecretRefused::NodeFile(_))
        ));
    }

    #[tokio::test]
    async fn links_and_dots_are_judged_by_where_they_lead() {
        let root = tempfile::tempdir().unwrap();
        let (keys, data) = (root.path().join("keys"), root.path().join("data"));
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(keys.join("good"), " k1 \n").unwrap();
        std::fs::write(data.join("admin.token"), "admin").unwrap();
        std::os::unix::fs::symlink(data.join("admin.token"), keys.join("sneaky")).unwrap();
        // The allow-list names the data dir's parent too: the data dir stays out.
        let secrets = Secrets::new(
            vec!["SOME_KEY".into()],
            vec![keys.clone(), root.path().to_path_buf()],
            vec![data.clone()],
        );
        let file = |p: &Path| SecretRef::File(p.to_string_lossy().into_owned());
        assert_eq!(secrets.read(&file(&keys.join("good"))).await, Ok("k1".into()));
        for bad in [
            keys.join("sneaky"),
            data.join("admin.token"),
            keys.join("..").join("data").join("admin.token"),
            data.join("not-yet"),
        ] {
            let refused = secrets.check(&llm(file(&bad))).await.unwrap_err();
            assert!(matches!(refused, SecretRefused::NodeFile(_)), "{bad:?}: {refused}");
            assert!(secrets.read(&file(&bad)).await.is_err(), "{bad:?}");
        }
        // A file that is not there yet is judged where it would be.
        assert_eq!(secrets.check(&llm(file(&keys.join("later")))).await, Ok(()));
        let elsewhere = Secrets::new(vec![], vec![keys.clone()], vec![data]);
        assert!(matches!(
            elsewhere.check(&llm(file(&root.path().join("x")))).await,
            Err(SecretRefused::FileNotAllowed(_))
        ));
        assert!(matches!(
            elsewhere.read(&SecretRef::Env("TROUPE_COOKIE".into())).await,
            Err(SecretRefused::NodeVariable(_))
        ));
        assert!(matches!(
            secrets.read(&SecretRef::Env("SOME_KEY".into())).await,
            Err(SecretRefused::EnvMissing(_))
        ));
    }
}

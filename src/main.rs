//! `troupe`: the command line. It parses arguments and calls into the crates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
mod cli;

use clap::{Parser, Subcommand};
use troupe_actors::node::{Node, Phase};
use troupe_gateway::{GatewayChild, Settings, Starting};
use troupe_runtime::auth::{self, Role};
use troupe_runtime::config::{Config, ServeArgs};
use troupe_runtime::supervision::ChildSpec;
use troupe_runtime::telemetry;

#[derive(Parser)]
#[command(
    name = "troupe",
    version,
    about = "A supervised, clustered actor runtime for agents and VMs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node.
    Serve(Box<ServeArgs>),
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Recover a cluster that lost its majority: run on one stopped survivor, it makes that
    /// node a cluster of its own from its state. The other members join it afresh (each
    /// with an empty data dir and --join); see docs/cluster.md.
    Recover {
        #[arg(long, env = "TROUPE_DATA_DIR", default_value = "./troupe-data")]
        data_dir: PathBuf,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Print a shell's completion script: `troupe completion bash > /etc/bash_completion.d/troupe`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Client(Box<cli::Command>),
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (the store keeps only its hash).
    Create {
        #[arg(long, value_enum)]
        role: Role,
        /// A name to recognise the token by in `tokens`.
        #[arg(long, default_value = "cli")]
        name: String,
        #[arg(long, env = "TROUPE_DATA_DIR", default_value = "./troupe-data")]
        data_dir: PathBuf,
    },
}

/// Runs the command; an error is printed as its chain of causes (no backtrace) and the
/// process exits 1, so a supervisor such as systemd sees the failure and restarts the node.
fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Client(command) = cli.command {
        return match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(cli::run(*command)),
            Err(e) => {
                eprintln!("troupe: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            telemetry::last_words(&format!("troupe: error: {}", said_once(&e)));
            ExitCode::FAILURE
        }
    }
}

/// An error as its chain of causes, each said once: a cause whose words its parent already
/// said (an error that shows its source in its own text) is left out. `{:#}` said them
/// twice: "node did not start: store: no leader …: no leader …".
fn said_once(e: &anyhow::Error) -> String {
    let mut said = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if said.contains(&text) {
            continue;
        }
        if !said.is_empty() {
            said.push_str(": ");
        }
        said.push_str(&text);
    }
    said
}

/// Ends the process as a Unix tool whose reader went away ends (`troupe events | head -3`):
/// by SIGPIPE, quietly. Rust ignores SIGPIPE, which every command keeps doing (a peer that
/// hangs up is an error it handles); only a write to stdout that found its reader gone
/// ([`cli::print_out`]) comes here.
#[allow(unsafe_code)]
fn end_by_sigpipe() -> ! {
    // SAFETY: sets SIGPIPE's disposition back to the default, then raises it: the process
    // ends there, with no other code of it running meanwhile on this thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(141)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Token {
            action: TokenCommand::Create { role, name, data_dir },
        } => {
            // Made before a node's first start is allowed; made in a directory no node uses
            // (a typo) is not seen until it is too late, so the note says where it works.
            let fresh = !Config::store_path_in(&data_dir).exists();
            let token = runtime.block_on(auth::create_offline(&data_dir, role, &name))?;
            if fresh {
                cli::print_out(format_args!("{token}\n"));
                eprintln!(
                    "note: no node has run with --data-dir {} yet (it holds no store): the token works once \
                     a node starts with that data dir",
                    data_dir.display()
                );
                return Ok(());
            }
            // The running node imports it now, so it works on every member at once (until
            // it was first used on this node, the others refused it as unknown).
            let handed = runtime.block_on(hand_to_running_node(&data_dir, &token));
            cli::print_out(format_args!("{token}\n"));
            if let Err(why) = handed {
                eprintln!(
                    "note: {why}; the node of --data-dir {} imports the token when it next starts, or when \
                     the token is first used on it (until then, other members refuse it)",
                    data_dir.display()
                );
            }
            Ok(())
        }
        Command::Recover { data_dir } => runtime.block_on(recover(&data_dir)),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            // Into a buffer first: clap_complete panics when its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "troupe", &mut script);
            cli::print_out(format_args!("{}", String::from_utf8_lossy(&script)));
            Ok(())
        }
        Command::Schema => {
            cli::print_out(format_args!("{}", troupe_gateway::schema::sdl()));
            Ok(())
        }
        Command::Version => {
            cli::print_out(format_args!("troupe {}\n", env!("CARGO_PKG_VERSION")));
            Ok(())
        }
        Command::Client(_) => unreachable!("client commands run before"),
    }
}

/// Uses `token` once on the node running with `data_dir` (its gateway's address is in
/// `gateway.addr`), which makes it import the token into the replicated table.
async fn hand_to_running_node(data_dir: &std::path::Path, token: &str) -> anyhow::Result<()> {
    let addr = std::fs::read_to_string(data_dir.join("gateway.addr")).context("no gateway.addr: no node runs there")?;
    let url = format!("http://{}/graphql", addr.trim());
    let response = troupe_actors::agent::http_client()
        .post(&url)
        .bearer_auth(token)
        .timeout(std::time::Duration::from_secs(10))
        .json(&serde_json::json!({ "query": "{ __typename }" }))
        .send()
        .await
        .with_context(|| format!("no node answered at {url}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "the node at {url} answered {}",
        response.status()
    );
    Ok(())
}

/// Makes this stopped node a cluster of its own from its state (see docs/cluster.md).
async fn recover(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let store = Config::store_path_in(data_dir);
    if !store.exists() {
        anyhow::bail!(
            "{} holds no node's store ({} is missing): give the data dir of a stopped member",
            data_dir.display(),
            store.display()
        );
    }
    let forgotten = troupe_actors::node::recover(data_dir).await?;
    let others: Vec<&str> = forgotten
        .members
        .iter()
        .map(String::as_str)
        .filter(|m| *m != forgotten.name)
        .collect();
    cli::print_out(format_args!(
        "{} is now a cluster of its own, with the state it held; the other members ({}) join it \
         with empty data dirs and --join\n",
        forgotten.name,
        others.join(", ")
    ));
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args)?;
    telemetry::init_logging(config.log_format);
    let metrics = telemetry::init_metrics();
    let (listen, settings, data_dir) = (config.listen, Settings::from(&config), config.data_dir.clone());
    // The gateway's address answers from the first moment (`/livez` ok, the rest 503 with
    // what the start waits for): a joining node may wait minutes to be admitted.
    let socket =
        std::net::TcpListener::bind(listen).with_context(|| format!("the gateway cannot listen on {listen}"))?;
    let phase = Phase::new("starting".into());
    let early = Starting::answer(socket, &config.node_name, phase.subscribe())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let opened = std::sync::OnceLock::new();
    let starting = Node::start_telling(
        &config,
        Box::new(move |api| {
            let gateway: Arc<dyn ChildSpec> = Arc::new(GatewayChild {
                api: api.clone(),
                metrics,
                listen,
                settings,
                data_dir,
                bound: Default::default(),
                early: std::sync::Mutex::new(Some(early)),
            });
            vec![gateway]
        }),
        &phase,
        &opened,
    );
    // A stop asked for while it starts (a joining node waits up to two minutes) ends the start
    // where it is, as a crash would (what it wrote is durable), closes the store's files, and
    // says so. So does a start that fails.
    let started = tokio::select! {
        node = starting => Ok(node),
        _ = term.recv() => Err("SIGTERM"),
        _ = tokio::signal::ctrl_c() => Err("SIGINT"),
    };
    if let (false, Some(store)) = (matches!(started, Ok(Ok(_))), opened.get()) {
        troupe_actors::node::stop_while_starting(store).await;
    }
    let mut node = match started {
        Ok(Ok(node)) => node,
        Ok(Err(e)) => return Err(e).context("node did not start"),
        Err(signal) => {
            tracing::info!(phase = %*phase.borrow(), "{signal} received while starting: stopped before serving");
            return Ok(());
        }
    };
    // Which process is this data dir's node: `kill -9 "$(cat troupe-data/troupe.pid)"` stops
    // this node and no other on the machine.
    let pid_file = config.data_dir.join("troupe.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write {}", pid_file.display()))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
        failure = node.failed() => {
            if let troupe_actors::node::NodeFailure::Left(_) = failure {
                tracing::error!(%failure, "this node is no member of the cluster: stopping");
                anyhow::bail!("{failure}");
            }
            tracing::error!(%failure, "the node failed; stopping so that a restart recovers from disk");
            anyhow::bail!("{failure}; a restart recovers from what is on disk");
        }
    }
    node.shutdown(config.shutdown_grace).await;
    let _ = std::fs::remove_file(&pid_file);
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    /// An error that says its source in its own words, as thiserror's `{0}` beside `#[from]`.
    #[derive(Debug)]
    struct Store(std::io::Error);

    impl std::fmt::Display for Store {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "store: {}", self.0)
        }
    }

    impl std::error::Error for Store {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_that_shows_its_source_says_it_once() {
        let inner = std::io::Error::other("no leader is known");
        let e = anyhow::Error::from(Store(inner)).context("node did not start");
        assert_eq!(super::said_once(&e), "node did not start: store: no leader is known");
        let plain = anyhow::anyhow!("cause").context("what failed");
        assert_eq!(super::said_once(&plain), "what failed: cause");
    }
}

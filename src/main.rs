//! `troupe`: the command line. It parses arguments and calls into the crates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use troupe_actors::node::Node;
use troupe_gateway::{GatewayChild, Settings};
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
    /// Print the GraphQL schema (SDL).
    Schema,
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
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("troupe: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Token {
            action: TokenCommand::Create { role, name, data_dir },
        } => {
            let token = runtime.block_on(auth::create_offline(&data_dir, role, &name))?;
            println!("{token}");
            Ok(())
        }
        Command::Schema => {
            print!("{}", troupe_gateway::schema::sdl());
            Ok(())
        }
        Command::Version => {
            println!("troupe {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args)?;
    telemetry::init_logging(config.log_format);
    let metrics = telemetry::init_metrics();
    let (listen, settings, data_dir) = (config.listen, Settings::from(&config), config.data_dir.clone());
    let mut node = Node::start(
        &config,
        Box::new(move |api| {
            let gateway: Arc<dyn ChildSpec> = Arc::new(GatewayChild {
                api: api.clone(),
                metrics,
                listen,
                settings,
                data_dir,
                bound: Default::default(),
            });
            vec![gateway]
        }),
    )
    .await
    .context("node did not start")?;
    // Which process is this data dir's node: `kill -9 "$(cat troupe-data/troupe.pid)"` stops
    // this node and no other on the machine.
    let pid_file = config.data_dir.join("troupe.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write {}", pid_file.display()))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
        failure = node.failed() => {
            tracing::error!(%failure, "the node failed; stopping so that a restart recovers from disk");
            anyhow::bail!("{failure}; a restart recovers from what is on disk");
        }
    }
    node.shutdown(config.shutdown_grace).await;
    let _ = std::fs::remove_file(&pid_file);
    tracing::info!("stopped");
    Ok(())
}

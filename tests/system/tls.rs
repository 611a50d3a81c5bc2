//! Mutual TLS between nodes: nodes with certificates from the cluster's CA form a cluster
//! (the cookie still checked), a stalled connection holds nobody up, and neither a node
//! without TLS nor one whose certificate another CA signed gets in.

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::replicated::CLUSTER;
use super::support::{Deadline, Guard, Node, NodeOpts, WAIT};

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("openssl (make deps installs it)")?;
    ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A CA `ca` (ca.pem, ca.key) and, signed by it, a certificate for 127.0.0.1 that serves as
/// server and client (`<ca>-node.pem`, `<ca>-node.key`), all in `dir`.
fn certificates(dir: &Path, ca: &str) -> Result<()> {
    certificates_naming(dir, ca, "IP:127.0.0.1")
}

/// As [`certificates`], the node's certificate naming `names` (a subjectAltName value).
fn certificates_naming(dir: &Path, ca: &str, names: &str) -> Result<()> {
    let (ca_key, ca_pem) = (format!("{ca}.key"), format!("{ca}.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca_pem,
            "-days",
            "3650",
            "-subj",
            &format!("/CN={ca}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    let ext = format!("{ca}-ext.cnf");
    std::fs::write(
        dir.join(&ext),
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={names}\n"
        ),
    )?;
    let (key, csr, pem) = (
        format!("{ca}-node.key"),
        format!("{ca}-node.csr"),
        format!("{ca}-node.pem"),
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=troupe-node",
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "3650",
            "-extfile",
            &ext,
        ],
    )
}

fn with_tls(opts: NodeOpts, dir: &Path, ca: &str) -> NodeOpts {
    let file = |name: String| dir.join(name).display().to_string();
    opts.arg("--tls-cert", file(format!("{ca}-node.pem")))
        .arg("--tls-key", file(format!("{ca}-node.key")))
        .arg("--tls-ca", file(format!("{ca}.pem")))
}

/// Starts `troupe serve` joining `join` with `extra` flags, and waits until it has asked to
/// be admitted `times` times without being let in; its log.
async fn refused_join(name: &str, join: &str, extra: &[String], times: usize) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let mut args = super::support::serve_args(dir.path(), "127.0.0.1:0", name, &["--join", join])?;
    args.extend(extra.iter().cloned());
    let _node = Guard::spawn(&args, dir.path())?;
    let deadline = Deadline::after(WAIT, format!("{name} to try to join"));
    loop {
        let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
        ensure!(
            !log.contains("joined the cluster's replicated log"),
            "{name} was admitted:\n{log}"
        );
        if log.matches("waiting to be admitted").count() >= times {
            return Ok(log);
        }
        deadline
            .tick(format!(
                "{name} asked {} times",
                log.matches("waiting to be admitted").count()
            ))
            .await?;
    }
}

async fn member_names(node: &Node) -> Result<Vec<String>> {
    let view = node.gql_ok(CLUSTER, json!({})).await?;
    let mut names: Vec<String> = view["cluster"]["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_over_mutual_tls_form_a_cluster_and_let_in_no_plaintext_or_foreign_node() -> Result<()> {
    let certs = tempfile::tempdir()?;
    certificates(certs.path(), "cluster-ca")?;
    certificates(certs.path(), "other-ca")?;
    let alpha = Node::start(with_tls(NodeOpts::named("alpha"), certs.path(), "cluster-ca")).await?;
    let join = format!("127.0.0.1:{}", alpha.cluster_port);
    // A connection that never starts its handshake holds nobody up.
    let _stalled = std::net::TcpStream::connect(&join)?;
    let beta = Node::start(with_tls(NodeOpts::named("beta"), certs.path(), "cluster-ca").arg("--join", &join)).await?;
    let deadline = Deadline::after(WAIT, "beta to be a member on alpha");
    while member_names(&alpha).await? != ["alpha", "beta"] {
        deadline.tick(format!("{:?}", member_names(&alpha).await?)).await?;
    }
    // One cluster over TLS: a token made on one works on the other.
    let m = "mutation { createToken(input: { role: VIEWER, name: \"over-tls\" }) { secret } }";
    let secret = alpha.gql_ok(m, json!({})).await?["createToken"]["secret"]
        .as_str()
        .context("a secret")?
        .to_owned();
    let deadline = Deadline::after(WAIT, "the token to work on beta");
    loop {
        let (status, _) = beta
            .post_graphql(Some(&secret), &json!({ "query": "{ node { name } }" }))
            .await?;
        if status == 200 {
            break;
        }
        deadline.tick(status).await?;
    }
    // The log's messages travel on the Raft lane (TLS too), not on the link.
    let sent = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("troupe_raft_messages_total{way=\"lane\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_default()
    };
    let lane = sent(&alpha.metrics().await?);
    ensure!(lane > 0.0, "alpha sent nothing on its Raft lane");

    // A node without TLS, and one whose certificate another CA signed, never get in.
    refused_join("plain", &join, &[], 3).await?;
    let file = |name: &str| certs.path().join(name).display().to_string();
    let foreign = [
        "--tls-cert".to_string(),
        file("other-ca-node.pem"),
        "--tls-key".into(),
        file("other-ca-node.key"),
        "--tls-ca".into(),
        file("other-ca.pem"),
    ];
    refused_join("foreign", &join, &foreign, 3).await?;
    ensure!(member_names(&alpha).await? == ["alpha", "beta"]);
    let log = std::fs::read_to_string(alpha.data_dir().join("stderr.log"))?;
    ensure!(
        log.contains("TLS handshake failed"),
        "alpha did not refuse a handshake:\n{log}"
    );
    Ok(())
}

#[tokio::test]
async fn tls_files_go_together_and_a_missing_one_is_named() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args([
            "serve",
            "--data-dir",
            &dir.path().display().to_string(),
            "--tls-cert",
            "/nonexistent.pem",
        ])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("tls_cert, tls_key and tls_ca go together"),
        "{err}"
    );
    let missing = dir.path().join("missing.pem").display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args([
            "serve",
            "--data-dir",
            &dir.path().display().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--cluster-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &missing,
            "--tls-key",
            &missing,
            "--tls-ca",
            &missing,
        ])
        .env("TROUPE_COOKIE", "c")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && err.contains(&missing), "{err}");
    Ok(())
}

/// How many Raft messages `node` sent `way` ("lane" or "link").
async fn raft_messages(node: &Node, way: &str) -> Result<f64> {
    let prefix = format!("troupe_raft_messages_total{{way=\"{way}\"}}");
    Ok(node
        .metrics()
        .await?
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_name_only_a_host_carry_the_raft_lane_for_nodes_that_advertise_it() -> Result<()> {
    let certs = tempfile::tempdir()?;
    certificates_naming(certs.path(), "named-ca", "DNS:localhost")?;
    let named = |opts: NodeOpts| with_tls(opts, certs.path(), "named-ca").arg("--advertise-host", "localhost");
    let alpha = Node::start(named(NodeOpts::named("alpha"))).await?;
    let join = format!("localhost:{}", alpha.cluster_port);
    let beta = Node::start(named(NodeOpts::named("beta")).arg("--join", &join)).await?;
    let deadline = Deadline::after(WAIT, "beta to be a member on alpha");
    while member_names(&alpha).await? != ["alpha", "beta"] {
        deadline.tick(format!("{:?}", member_names(&alpha).await?)).await?;
    }
    // Writes to replicate: the leader's appends go over the lane, whose TLS checks the name
    // each node advertised (dialled by IP, a certificate naming only a host was refused,
    // and the messages went over the link instead).
    let m = "mutation($n: String!) { createToken(input: { role: VIEWER, name: $n }) { secret } }";
    for i in 0..20 {
        alpha.gql_ok(m, json!({ "n": format!("t{i}") })).await?;
    }
    let deadline = Deadline::after(WAIT, "the token to work on beta");
    loop {
        let listed = beta.gql_ok("{ tokens { name } }", json!({})).await?;
        if listed["tokens"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "t19"))
        {
            break;
        }
        deadline.tick(listed).await?;
    }
    let (lane, link) = (
        raft_messages(&alpha, "lane").await?,
        raft_messages(&alpha, "link").await?,
    );
    ensure!(
        lane > link,
        "alpha sent {lane} Raft messages on its lane and {link} on the link"
    );
    Ok(())
}

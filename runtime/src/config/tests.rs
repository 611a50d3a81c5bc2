use super::*;

#[test]
fn flags_win_over_the_file_and_the_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(
        &path,
        "node_name = \"from-file\"\nretry_base_ms = 7\njoin = [\"10.0.0.1:4697\"]\nmetrics_auth = true\n\
         secret_env = [\"OPENAI_API_KEY\"]\nsecret_dirs = [\"/etc/keys\"]\n",
    )
    .unwrap();
    let c = Config::load(ServeArgs {
        config: Some(path),
        node_name: Some("from-flag".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(c.node_name, "from-flag");
    assert_eq!(c.retry_base, Duration::from_millis(7));
    assert_eq!(c.join, vec!["10.0.0.1:4697".to_string()]);
    assert!(c.metrics_auth);
    assert_eq!(c.secret_env, vec!["OPENAI_API_KEY".to_string()]);
    assert_eq!(c.secret_dirs, vec![PathBuf::from("/etc/keys")]);
    assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
}

#[test]
fn the_example_config_in_deploy_parses_and_names_every_key() {
    let text = include_str!("../../../deploy/troupe.toml");
    let file: ServeArgs = toml::from_str(text).expect("deploy/troupe.toml is valid");
    assert_eq!(file.event_retention, Some(1_000_000));
    assert_eq!(file.body_limit_bytes, Some(1024 * 1024));
    // Every flag is documented in the example, set or commented out.
    let command = <ServeArgs as clap::Args>::augment_args(clap::Command::new("t"));
    for arg in command.get_arguments() {
        let key = arg.get_id().as_str();
        if key == "config" {
            continue;
        }
        assert!(
            text.contains(&format!("{key} =")),
            "deploy/troupe.toml does not mention {key}"
        );
    }
}

#[test]
fn unknown_keys_bad_names_and_zero_limits_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, "listne = \"127.0.0.1:1\"\n").unwrap();
    let err = Config::load(ServeArgs {
        config: Some(path),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    let err = Config::load(ServeArgs {
        node_name: Some("bad name".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { key: "node_name", .. }), "{err}");
    let err = Config::load(ServeArgs {
        raft_snapshot_every_mb: Some(0),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                key: "raft_snapshot_every_mb",
                ..
            }
        ),
        "{err}"
    );
    for bad in ["node-a:4697", "", "a..b", "under_score"] {
        let err = Config::load(ServeArgs {
            node_name: Some("n".into()),
            advertise_host: Some(bad.into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "advertise_host",
                    ..
                }
            ),
            "{bad}: {err}"
        );
    }
    for good in ["node-a.example", "10.0.0.7", "[::1]"] {
        let config = Config::load(ServeArgs {
            node_name: Some("n".into()),
            advertise_host: Some(good.into()),
            ..Default::default()
        })
        .unwrap();
        assert!(config.advertise_host.is_some(), "{good}");
    }
    // Listening on every interface needs the address the others dial.
    for every in ["0.0.0.0:4697", "[::]:4697"] {
        let err = Config::load(ServeArgs {
            node_name: Some("n".into()),
            cluster_listen: Some(every.parse().unwrap()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { key: "cluster_listen", ref message } if message.contains("--advertise-host")),
            "{every}: {err}"
        );
        let config = Config::load(ServeArgs {
            node_name: Some("n".into()),
            cluster_listen: Some(every.parse().unwrap()),
            advertise_host: Some("10.0.0.7".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(config.cluster_listen.ip().is_unspecified());
    }
    // A member's cluster address to join: HOST:PORT.
    let joining = |address: &str| {
        Config::load(ServeArgs {
            node_name: Some("n".into()),
            join: vec![address.into()],
            ..Default::default()
        })
    };
    for bad in [
        "127.0.0.1",
        "127.0.0.1:abc",
        "127.0.0.1:0",
        "::1:4697",
        "a b:4697",
        ":4697",
    ] {
        let err = joining(bad).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { key: "join", .. }), "{bad}: {err}");
    }
    for good in ["127.0.0.1:4697", "node-a.example:4697", "[::1]:4697", " a:1 "] {
        assert_eq!(joining(good).unwrap().join, [good.trim()], "{good}");
    }
    let err = Config::load(ServeArgs {
        node_name: Some("n".into()),
        secret_env: vec!["OPENAI_API_KEY".into(), "TROUPE_COOKIE".into()],
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { key: "secret_env", .. }), "{err}");
    let err = Config::load(ServeArgs {
        node_name: Some("n".into()),
        ws_max_subscriptions: Some(0),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                key: "ws_max_subscriptions",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_hook_that_would_refuse_every_request_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t0k3n").unwrap();
    let path = dir.path().join("t.toml");
    let config = format!(
        "[[hooks]]\nname = \"h\"\nbearer_token_file = \"{}\"\ncapability = \"x\"\nmax_body_bytes = 0\n",
        dir.path().join("token").display()
    );
    std::fs::write(&path, config).unwrap();
    let err = Config::load(ServeArgs {
        node_name: Some("n".into()),
        config: Some(path),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { key: "hooks", .. }), "{err}");
    assert!(err.to_string().contains("max_body_bytes 0"), "{err}");
}

#[test]
fn a_request_body_larger_than_half_a_log_entry_is_refused_and_the_store_cache_is_a_setting() {
    let load = |body: usize, cache: Option<usize>| {
        Config::load(ServeArgs {
            node_name: Some("n".into()),
            body_limit_bytes: Some(body),
            store_cache_mb: cache,
            ..Default::default()
        })
    };
    let err = load(crate::store::MAX_BATCH_BYTES / 2 + 1, None).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                key: "body_limit_bytes",
                ..
            }
        ),
        "{err}"
    );
    let c = load(crate::store::MAX_BATCH_BYTES / 2, None).unwrap();
    assert_eq!(c.store_cache_mb, 128);
    assert_eq!(load(1 << 20, Some(32)).unwrap().store_cache_mb, 32);
    let err = load(1 << 20, Some(0)).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                key: "store_cache_mb",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_watchdog_deadlines_default_per_kind_and_pairs_override_or_turn_a_kind_off() {
    let c = Config::load(ServeArgs::default()).unwrap();
    assert_eq!(c.watchdog.len(), WATCHED_KINDS.len());
    assert!(c.watchdog.values().all(|d| *d == Duration::from_secs(30)));
    let c = Config::load(ServeArgs {
        watchdog_ms: Some("supervisor=200, HOST=0,VM=500".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(c.watchdog["SUPERVISOR"], Duration::from_millis(200));
    assert_eq!(c.watchdog["VM"], Duration::from_millis(500));
    assert!(!c.watchdog.contains_key("HOST"));
    for bad in ["SUPERVISOR", "SUPERVISOR=soon", "AGENT=100", "=5", "SUPERVISR=100"] {
        let refused = Config::load(ServeArgs {
            watchdog_ms: Some(bad.into()),
            ..Default::default()
        });
        assert!(
            matches!(refused, Err(ConfigError::Invalid { key: "watchdog_ms", .. })),
            "{bad}"
        );
    }
}

#[test]
fn llm_records_are_kept_thirty_days_unless_told_and_zero_keeps_them_for_ever() {
    let days = |d: Option<u64>| {
        Config::load(ServeArgs {
            llm_retention_days: d,
            ..Default::default()
        })
        .unwrap()
        .llm_retention
    };
    assert_eq!(days(None), Some(Duration::from_secs(30 * 86_400)));
    assert_eq!(days(Some(2)), Some(Duration::from_secs(2 * 86_400)));
    assert_eq!(days(Some(0)), None);
}

#[test]
fn llm_prices_are_model_equals_input_slash_output_per_million_tokens() {
    let config = Config::load(ServeArgs {
        llm_prices: vec!["gpt-4o=2.5/10".into(), " vendor/model:1=0/0.5 ".into()],
        ..Default::default()
    })
    .unwrap();
    let price = config.llm_prices["gpt-4o"];
    assert_eq!(price.of(1_000_000, 100_000), 2.5 + 1.0);
    assert_eq!(config.llm_prices["vendor/model:1"].of(10, 2_000_000), 1.0);
    // In decimals, not binary fractions: 100 tokens at 0.15 and 7 at 0.6.
    let small = Config::load(ServeArgs {
        llm_prices: vec!["mini=0.15/0.6".into()],
        ..Default::default()
    })
    .unwrap()
    .llm_prices["mini"];
    assert_eq!(small.of(100, 7).to_string(), "0.0000192");
    let mut sum = 0.0;
    for _ in 0..10 {
        sum = super::usd(sum + small.of(1000, 0));
    }
    assert_eq!(sum.to_string(), "0.0015");
    for bad in ["gpt-4o", "gpt-4o=2.5", "=1/2", "m=-1/2", "m=a/b", "m=1/inf"] {
        let err = Config::load(ServeArgs {
            llm_prices: vec![bad.into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { key: "llm_prices", .. }),
            "{bad}: {err}"
        );
    }
}

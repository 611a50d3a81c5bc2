use super::*;
use serde_json::json;

fn sh(script: &str) -> ExecBackend {
    ExecBackend {
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        timeout_ms: None,
        env: vec![("GREETING".into(), "hi".into())],
    }
}

fn ctx() -> ExecContext<'static> {
    ExecContext {
        agent_id: "a1",
        task_id: "t1",
        attempt: 2,
        limits: Limits::default(),
        groups: Groups::default(),
        cgroup: None,
        logs: Default::default(),
    }
}

#[tokio::test]
async fn stdout_is_the_result_parsed_as_json_when_it_is_json() {
    assert_eq!(run(&sh("cat"), ctx(), &json!({"x": [1]})).await, Ok(json!({"x": [1]})));
    let env = run(
        &sh("echo \"$GREETING $TROUPE_TASK_ID $TROUPE_TASK_ATTEMPT $TROUPE_AGENT_ID\""),
        ctx(),
        &json!(null),
    )
    .await;
    assert_eq!(env, Ok(json!("hi t1 2 a1")));
}

#[tokio::test]
async fn the_child_sees_only_its_spec_path_home_lang_and_the_task_variables() {
    let seen = run(&sh("env | cut -d= -f1 | sort"), ctx(), &json!(null)).await.unwrap();
    let names: Vec<&str> = seen.as_str().unwrap().lines().collect();
    // What the shell itself sets is fine; nothing of the node's own environment is.
    let allowed = [
        "PATH",
        "HOME",
        "LANG",
        "GREETING",
        "TROUPE_TASK_ID",
        "TROUPE_TASK_ATTEMPT",
        "TROUPE_ATTEMPT",
        "TROUPE_AGENT_ID",
        "PWD",
        "SHLVL",
        "_",
        "OLDPWD",
    ];
    for name in &names {
        assert!(allowed.contains(name), "the child inherited {name}: {names:?}");
    }
    let node_only: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| !allowed.contains(&k.as_str()))
        .collect();
    assert!(
        !node_only.is_empty(),
        "this test needs a variable the child must not see"
    );
}

#[tokio::test]
async fn a_nonzero_exit_reports_the_code_and_stderr_tail() {
    let err = run(&sh("echo boom >&2; exit 3"), ctx(), &json!(null))
        .await
        .unwrap_err();
    assert_eq!(err, "exit code 3: boom");
}

#[tokio::test]
async fn a_missing_program_is_a_clear_error() {
    let b = ExecBackend {
        command: vec!["/nonexistent/troupe-cmd".into()],
        timeout_ms: None,
        env: vec![],
    };
    let err = run(&b, ctx(), &json!(null)).await.unwrap_err();
    assert!(err.starts_with("cannot start"), "{err}");
}

#[tokio::test]
async fn a_background_child_holding_stdout_is_killed_when_the_leader_exits() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("sleep 600 & echo $! > '{}'; echo done", pid_file.display());
    // Without the group kill at the leader's exit, the sleep keeps stdout open for 10 min.
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        run(&sh(&script), ctx(), &json!(null)),
    )
    .await
    .expect("the attempt ends when its leader does");
    assert_eq!(out, Ok(json!("done")));
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // The kill is sent; its delivery takes a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
        if !alive {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the background child {pid} outlived its task: {stat}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn output_past_the_limit_fails_the_attempt_instead_of_filling_memory() {
    let err = run(&sh("head -c 5000000 /dev/zero"), ctx(), &json!(null))
        .await
        .unwrap_err();
    assert!(err.contains("stdout exceeded"), "{err}");
    let long_stderr = run(
        &sh("head -c 100000 /dev/zero | tr '\\0' e >&2; echo end >&2; exit 1"),
        ctx(),
        &json!(null),
    )
    .await;
    let err = long_stderr.unwrap_err();
    assert!(err.ends_with("eend"), "{}", &err[err.len().saturating_sub(40)..]);
    assert!(err.len() < 2 * STDERR_TAIL, "{}", err.len());
}

#[test]
fn the_tail_keeps_the_end_on_a_char_boundary() {
    assert_eq!(tail("abcdef", 3), "def");
    assert_eq!(tail("ééé", 3), "é");
}

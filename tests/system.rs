//! Whole-system tests: each test starts real `troupe serve` processes on ephemeral loopback
//! ports and drives them over HTTP, GraphQL and WebSocket, as a user would.
//!
//! One binary for all areas keeps the link cost to one step. The areas live in
//! `tests/system/`; the inline `mod system` makes rustc look for them there.

mod system {
    mod support;

    mod agent_backends;
    mod agent_health;
    mod agent_lifecycle;
    mod alerts;
    mod alerts_cluster;
    mod auth;
    mod bad_input;
    mod cluster;
    mod command_line;
    mod dead_letters;
    mod docs_examples;
    mod docs_shell;
    mod exec_backend;
    mod experiment_actions;
    mod experiment_hangs;
    mod experiments;
    mod failover;
    mod faults;
    mod handoff;
    mod history;
    mod hooks;
    mod hosts;
    mod http_api;
    mod joining;
    mod llm_loop;
    mod llm_sessions;
    mod majority;
    mod mcp;
    mod membership;
    mod messages;
    mod names;
    mod partitions;
    mod pauses;
    mod races;
    mod recovery;
    mod replica_reads;
    mod replicated;
    mod restarts;
    mod scheduling;
    mod stopping;
    mod subscriptions;
    mod supervision;
    mod swarm_failures;
    mod swarm_races;
    mod swarm_teams;
    mod swarms;
    mod task_insight;
    mod tls;
    mod tooling;
    mod vm_moves;
    mod vm_races;
    mod vms;
    mod websocket;
    mod work;
}

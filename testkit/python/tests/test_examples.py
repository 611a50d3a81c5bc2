"""The kit's own examples, against real nodes (TROUPE_BIN or target/debug/troupe)."""

import pytest

from troupe_testkit import ApiError, Node, Settled


def test_a_crashed_worker_restarts_alone_and_work_keeps_flowing(troupe):
    workers = [troupe.spawn_builtin("echo", capabilities=["echo"], labels={"role": "worker"}) for _ in range(3)]
    with troupe.fault("CRASH", labels={"role": "worker"}, seed=3, recover_within_ms=10_000) as exp:
        task = troupe.submit("still served", capability="echo")
        assert troupe.wait_task(task)["result"] == "still served"
    report = exp.report
    assert exp.state == "PASSED", report["reason"]
    assert report["verdict"] == "PASS" and report["recovered"] == 1
    assert report["unexpected"] == []
    hit = exp.injections[0]
    assert hit["target"] in workers and hit["expected"] == [{"id": hit["target"], "effect": "RESTART"}]
    assert hit["timeToRecoverMs"] is not None and hit["timeToDetectMs"] is not None
    kinds = [e["kind"] for e in hit["observed"]]
    assert "AGENT_FAILED" in kinds and "AGENT_RESTARTED" in kinds


def test_a_hang_is_reverted_when_the_block_ends_and_nothing_stays_armed(troupe):
    agent = troupe.spawn_builtin("echo")
    with troupe.fault("HANG", ids=[agent], lease_ms=1500) as exp:
        assert len(troupe.fault_gates()) == 1
        task = troupe.submit("after the hang", agent=agent)
    assert troupe.fault_gates() == []
    assert exp.report["verdict"] == "PASS", exp.report["reason"]
    assert troupe.wait_task(task)["result"] == "after the hang"


def test_a_selector_that_matches_nothing_is_refused(troupe):
    try:
        troupe.fault("CRASH", ids=["nobody"]).start()
    except ApiError as e:
        assert e.code == "INVALID_INPUT"
    else:
        raise AssertionError("a selector that matches nothing was accepted")


def test_a_node_killed_from_outside_comes_back_with_its_agents(troupe, kill_node, restart_node):
    agent = troupe.spawn_builtin("echo")
    kill_node(troupe)
    restart_node(troupe)
    troupe.wait_agent(agent, "RUNNING")


def test_two_nodes_are_one_cluster_a_task_submitted_on_one_runs_on_the_others_agent(troupe_nodes):
    first, second = troupe_nodes(2)
    worker = second.spawn_builtin("echo", capabilities=["far"])
    task = first.submit("across", capability="far")
    done = first.wait_task(task)
    assert done["result"] == "across"
    assert second.gql("query($id: ID!) { agent(id: $id) { tasksSucceeded } }", {"id": worker})["agent"]["tasksSucceeded"] in (1, "1")


def test_a_full_disk_refuses_writes_inside_the_block_and_the_node_takes_them_after(troupe):
    token = "mutation($n: String!) { createToken(input: { role: VIEWER, name: $n }) { token { id } } }"
    with troupe.fault("DISK_FULL") as exp:
        try:
            troupe.gql(token, {"n": "while-full"})
        except ApiError as e:
            assert e.code == "UNAVAILABLE" and "no space left" in e.message
        else:
            raise AssertionError("a write went through a full disk")
    assert exp.report["verdict"] == "PASS", exp.report["reason"]
    assert exp.injections[0]["expected"] == [{"id": troupe.name, "effect": "WRITES_REFUSED"}]
    troupe.gql(token, {"n": "after"})


def test_a_node_that_exits_at_start_is_reported_at_once_with_its_message():
    with pytest.raises(Settled, match="exited with 2") as refused:
        Node.start(name="bad-args", args=["--voters", "notanumber"])
    assert "notanumber" in str(refused.value)


def test_waiting_for_a_task_that_ended_otherwise_says_how_it_ended_at_once(troupe):
    task = troupe.submit(1, agent=troupe.spawn_builtin("fail"))
    with pytest.raises(Settled, match="ended DEAD"):
        troupe.wait_task(task)

"""The pytest plugin: fixtures that start Troupe nodes for a test and remove them after.

- `troupe`: one node with fault injection on;
- `troupe_nodes(n)`: n nodes, the others joined to the first, all UP in each one's view;
- `kill_node(node)` / `restart_node(node)`: from outside, as a real crash or reboot is.
"""

from __future__ import annotations

from typing import Callable, List

import pytest

from .node import Node, until


@pytest.fixture
def troupe():
    node = Node.start(name="kit")
    try:
        yield node
    finally:
        node.remove()


@pytest.fixture
def troupe_nodes():
    started: List[Node] = []

    def start(n: int = 3, **kwargs) -> List[Node]:
        first = Node.start(name="n1", **kwargs)
        started.append(first)
        for i in range(2, n + 1):
            started.append(Node.start(name=f"n{i}", join=first, **kwargs))
        names = {f"n{i}" for i in range(1, n + 1)}

        def all_up():
            for node in started:
                members = node.gql("{ cluster { members { name state } } }")["cluster"]["members"]
                if {m["name"] for m in members if m["state"] == "UP"} != names:
                    return False
            return True

        until(f"{n} nodes to list each other UP", all_up)
        return list(started)

    try:
        yield start
    finally:
        for node in started:
            node.remove()


@pytest.fixture
def kill_node() -> Callable[[Node], None]:
    return lambda node: node.kill()


@pytest.fixture
def restart_node() -> Callable[[Node], None]:
    return lambda node: node.restart()

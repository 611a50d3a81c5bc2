"""Start Troupe nodes in tests, inject faults into their supervision trees, read the report.

    node = Node.start(fault_injection=True)
    agent = node.spawn_builtin("echo")
    with node.fault("CRASH", ids=[agent]) as exp:
        ...                      # the fault is armed (and its lease renewed) in here
    assert exp.report["verdict"] == "PASS"
    node.stop()

Only the standard library: GraphQL over HTTP with urllib, nodes as child processes.
"""

from .node import ApiError, Experiment, Node, Settled, find_binary

__all__ = ["ApiError", "Experiment", "Node", "Settled", "find_binary"]

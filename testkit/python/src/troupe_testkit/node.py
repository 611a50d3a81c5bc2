"""A Troupe node run by a test, and the fault experiments it can drive."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

#: How long the kit waits for anything (a node to serve, an experiment to end).
WAIT = 60.0
#: The cluster cookie every node started by the kit shares.
COOKIE = "troupe-testkit-cookie"

EXPERIMENT_FIELDS = """id name state seed startedAt finishedAt
  injections { id action target kind supervisor outcome injectedAt effectiveAt revertedAt recoveredAt
               timeToDetectMs timeToRecoverMs expected { id effect } observed { seq kind subject at } }
  report { verdict reason injected recovered maxTimeToRecoverMs
           invariants { name ok detail } unexpected { seq kind subject at } }"""

FINAL = ("PASSED", "FAILED", "ABORTED")


class ApiError(Exception):
    """An error the API answered: its code (extensions.code) and message."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def find_binary() -> str:
    """The troupe binary: $TROUPE_BIN, else `troupe` on PATH, else target/debug/troupe of
    the checkout the kit sits in."""
    env = os.environ.get("TROUPE_BIN")
    if env:
        return env
    on_path = shutil.which("troupe")
    if on_path:
        return on_path
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "target" / "debug" / "troupe"
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError("no troupe binary: set TROUPE_BIN, or build it (cargo build)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The states a task does not leave.
ENDED = {"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "DEPENDENCY_FAILED", "DEAD"}


class Settled(Exception):
    """Raised by a probe of `until` when what it waits for can no longer come (the node
    exited, the task ended otherwise): `until` raises it at once instead of waiting on."""


def until(what: str, probe, timeout: float = WAIT, every: float = 0.05):
    """Polls `probe` until it answers something true; its last error is in the timeout's
    message. A probe's `Settled` ends the wait at once."""
    end = time.monotonic() + timeout
    last: Optional[BaseException] = None
    while time.monotonic() < end:
        try:
            value = probe()
            if value:
                return value
        except Settled:
            raise
        except Exception as e:  # noqa: BLE001 - kept for the message
            last = e
        time.sleep(every)
    raise TimeoutError(f"timed out waiting for {what}" + (f": {last}" if last else ""))


class Node:
    """A `troupe serve` child process with its own data dir, on loopback ports."""

    def __init__(self, name: str, args: List[str], binary: Optional[str] = None):
        self.name = name
        self.args = args
        self.binary = binary or find_binary()
        self.dir = Path(tempfile.mkdtemp(prefix=f"troupe-kit-{name}-"))
        self.cluster_port = free_port()
        self.port = 0
        self.url = ""
        self.token = ""
        self.proc: Optional[subprocess.Popen] = None

    @classmethod
    def start(
        cls,
        name: str = "kit",
        fault_injection: bool = True,
        join: Optional["Node"] = None,
        args: Iterable[str] = (),
        binary: Optional[str] = None,
    ) -> "Node":
        """Starts a node (joined to `join`'s cluster when given) and waits until it serves."""
        extra = list(args)
        if fault_injection:
            extra += ["--fault-injection", "true"]
        if join is not None:
            extra += ["--join", f"127.0.0.1:{join.cluster_port}"]
        node = cls(name, extra, binary)
        try:
            node._launch()
        except BaseException:
            # Its message carries the log's tail already: nothing of it is left behind.
            node.remove()
            raise
        return node

    def _launch(self) -> None:
        addr_file = self.dir / "gateway.addr"
        addr_file.unlink(missing_ok=True)
        cmd = [
            self.binary, "serve",
            "--data-dir", str(self.dir),
            "--listen", f"127.0.0.1:{self.port}",
            "--node-name", self.name,
            "--cluster-listen", f"127.0.0.1:{self.cluster_port}",
            "--log-format", "text",
            *self.args,
        ]
        env = dict(os.environ, TROUPE_COOKIE=COOKIE, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        log = open(self.dir / "stderr.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        log.close()

        def ready():
            if self.proc.poll() is not None:
                raise Settled(f"node {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            addr = addr_file.read_text().strip() if addr_file.exists() else ""
            token_file = self.dir / "admin.token"
            if not addr or not token_file.exists():
                return None
            with urllib.request.urlopen(f"http://{addr}/healthz", timeout=5) as r:
                return addr if r.status == 200 else None

        addr = until(f"node {self.name} to serve", ready)
        self.url = f"http://{addr}"
        self.port = int(addr.rsplit(":", 1)[1])
        self.token = (self.dir / "admin.token").read_text().strip()

    def log_tail(self, lines: int = 30) -> str:
        path = self.dir / "stderr.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- life and death, from outside as a real crash is ------------------------------------

    def kill(self) -> None:
        """SIGKILL: the node dies without a chance to clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=WAIT)

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not exited within the kit's wait."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        """Starts it again on the same data dir and ports."""
        self.stop()
        self._launch()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- GraphQL --------------------------------------------------------------------------

    def gql(self, query: str, variables: Optional[Dict[str, Any]] = None, token: Optional[str] = None) -> Dict[str, Any]:
        """Runs a query or mutation; raises ApiError with the API's code when it answers one."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(
            f"{self.url}/graphql",
            data=body,
            headers={"content-type": "application/json", "authorization": f"Bearer {token or self.token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=WAIT) as r:
                answer = json.loads(r.read())
        except urllib.error.HTTPError as e:
            answer = json.loads(e.read() or b"{}")
        if answer.get("errors"):
            first = answer["errors"][0]
            raise ApiError(first.get("extensions", {}).get("code", "ERROR"), first.get("message", ""))
        return answer["data"]

    def spawn_builtin(self, kind: str = "echo", name: Optional[str] = None, capabilities: Iterable[str] = (),
                      labels: Optional[Dict[str, str]] = None) -> str:
        """Spawns a builtin agent and answers its id once it runs."""
        spec = {
            "name": name or f"{kind}-agent",
            "backend": {"builtin": {"kind": kind}},
            "capabilities": list(capabilities),
            "labels": [{"key": k, "value": v} for k, v in (labels or {}).items()],
        }
        agent = self.gql("mutation($s: SpawnAgentInput!) { spawnAgent(input: $s) { id } }", {"s": spec})["spawnAgent"]["id"]
        self.wait_agent(agent, "RUNNING")
        return agent

    def wait_agent(self, agent: str, state: str) -> Dict[str, Any]:
        q = "query($id: ID!) { agent(id: $id) { id state restarts } }"
        return until(f"agent {agent} to be {state}", lambda: (a := self.gql(q, {"id": agent})["agent"]) and a["state"] == state and a)

    def submit(self, payload: Any, agent: Optional[str] = None, capability: Optional[str] = None) -> str:
        task = {"payload": payload, "agentId": agent, "capability": capability}
        return self.gql("mutation($t: SubmitTaskInput!) { submitTask(input: $t) { id } }", {"t": task})["submitTask"]["id"]

    def wait_task(self, task: str, state: str = "SUCCEEDED") -> Dict[str, Any]:
        """Waits for the task to be in `state`; raises `Settled` at once when it ended in
        another state (with that state and its error)."""
        q = "query($id: ID!) { task(id: $id) { id state result error attempts } }"

        def reached():
            t = self.gql(q, {"id": task})["task"]
            if t and t["state"] == state:
                return t
            if t and t["state"] in ENDED:
                raise Settled(f"task {task} ended {t['state']} (error: {t['error']}), not {state}")
            return None

        return until(f"task {task} to be {state}", reached)

    # -- faults ---------------------------------------------------------------------------

    def fault(self, action: str, *, ids: Iterable[str] = (), kinds: Iterable[str] = (),
              labels: Optional[Dict[str, str]] = None, under: Optional[str] = None, mode: str = "ONE",
              value: Optional[int] = None, exclude: Iterable[str] = (), name: Optional[str] = None,
              duration_ms: Optional[int] = None, recover_within_ms: Optional[int] = None, seed: Optional[int] = None,
              allow_escalation: bool = False, lease_ms: int = 3000, invariants: Optional[List[str]] = None,
              dry_run: bool = False, nodes: Iterable[str] = (), to_nodes: Iterable[str] = (),
              params: Optional[Dict[str, Any]] = None, count: Optional[int] = None,
              every_ms: Optional[int] = None) -> "Experiment":
        """One fault as an experiment, for a `with` block: armed when the block starts, its lease
        renewed while the block runs, ended (reverted and judged) when the block ends; the
        report is then `exp.report`. `nodes` picks the nodes of a node fault (PARTITION,
        STORE_*, DISK_FULL), `to_nodes` a partition's far side, `params` the action's settings
        (docs/faults.md), `count` and `every_ms` repeat it in rounds."""
        target: Dict[str, Any] = {"mode": mode}
        for key, val in (("ids", list(ids)), ("kinds", list(kinds)), ("exclude", list(exclude)),
                         ("nodes", list(nodes))):
            if val:
                target[key] = val
        if labels:
            target["labels"] = [{"key": k, "value": v} for k, v in labels.items()]
        if under:
            target["under"] = under
        if value is not None:
            target["value"] = value
        fault: Dict[str, Any] = {"action": action, "target": target}
        if to_nodes:
            fault["to"] = {"nodes": list(to_nodes), "mode": "ALL"}
        if params is not None:
            fault["params"] = params
        spec: Dict[str, Any] = {
            "name": name or f"{action.lower()} from a test",
            "faults": [fault],
            "allowEscalation": allow_escalation,
            "leaseMs": lease_ms,
            "dryRun": dry_run,
        }
        for key, val in (("durationMs", duration_ms), ("recoverWithinMs", recover_within_ms), ("seed", seed),
                         ("invariants", invariants), ("count", count), ("everyMs", every_ms)):
            if val is not None:
                spec[key] = val
        return Experiment(self, spec)

    def fault_gates(self) -> List[Dict[str, Any]]:
        return self.gql("{ faultGates { experiment injection action target since } }")["faultGates"]

    def halt_all_faults(self) -> int:
        return self.gql("mutation { haltAllFaults }")["haltAllFaults"]

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class Experiment:
    """A running experiment; `with` it to bound its faults to a block."""

    def __init__(self, node: Node, spec: Dict[str, Any]):
        self.node = node
        self.spec = spec
        self.id: Optional[str] = None
        self.started: Optional[Dict[str, Any]] = None
        self.final: Optional[Dict[str, Any]] = None
        self._stop = threading.Event()
        self._renewer: Optional[threading.Thread] = None

    def start(self) -> "Experiment":
        q = f"mutation($i: StartExperimentInput!) {{ startExperiment(input: $i) {{ {EXPERIMENT_FIELDS} }} }}"
        self.started = self.node.gql(q, {"i": self.spec})["startExperiment"]
        self.id = self.started["id"]
        if not self.spec.get("dryRun"):
            self._renewer = threading.Thread(target=self._renew, daemon=True)
            self._renewer.start()
        return self

    def _renew(self) -> None:
        every = self.spec["leaseMs"] / 3000.0
        while not self._stop.wait(every):
            try:
                self.node.gql("mutation($id: ID!) { renewExperiment(id: $id) { state } }", {"id": self.id})
            except ApiError:
                return  # it ended (a revert by the node, the kill switch)

    def get(self) -> Dict[str, Any]:
        q = f"query($id: ID!) {{ experiment(id: $id) {{ {EXPERIMENT_FIELDS} }} }}"
        return self.node.gql(q, {"id": self.id})["experiment"]

    def end(self) -> Dict[str, Any]:
        """Ends it now (reverted, then judged) and waits for the report."""
        self._stop.set()
        if self._renewer:
            self._renewer.join()
        if self.spec.get("dryRun"):
            self.final = self.started
            return self.final
        try:
            self.node.gql("mutation($id: ID!) { stopExperiment(id: $id) { state } }", {"id": self.id})
        except ApiError as e:
            if e.code != "CONFLICT":
                raise
        self.final = until(f"experiment {self.id} to end", lambda: (e := self.get())["state"] in FINAL and e)
        return self.final

    @property
    def report(self) -> Dict[str, Any]:
        """The recovery report (waits for the experiment to end)."""
        if self.final is None:
            self.final = until(f"experiment {self.id} to end", lambda: (e := self.get())["state"] in FINAL and e)
        return self.final["report"]

    @property
    def state(self) -> str:
        return (self.final or self.get())["state"]

    @property
    def injections(self) -> List[Dict[str, Any]]:
        return (self.final or self.started or {}).get("injections", [])

    def __enter__(self) -> "Experiment":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.end()

#!/usr/bin/env bash
# Offline checks of deploy/ (run by `make test`; builds nothing, starts nothing):
#
#   - every manifest in deploy/k8s against the Kubernetes API schemas of a pinned release
#     (kubernetes-validate --strict: unknown fields are errors), and kustomization.yaml
#     listing exactly those files;
#   - the troupe.toml in the ConfigMap parses and sets only keys that deploy/troupe.toml
#     names (a node refuses an unknown key at start);
#   - compose.yaml: services a, b and c, each with a healthcheck on /healthz, gateways
#     published on 127.0.0.1 only, each cluster address its fixed IP, a alone and b and c
#     joining a's address, and only TROUPE_* variables that troupe reads;
#   - local-cluster.sh: `bash -n` (and shellcheck, where it is installed);
#   - troupe.service: its [Unit], [Service] and [Install] sections (and
#     `systemd-analyze verify`, where it is installed).
#
# The Python tools live in a venv at target/deploy-venv, made on the first run from the
# pinned deploy/validate-requirements.txt (that needs PyPI) and reused after that. The
# Kubernetes schemas ship inside kubernetes-validate, so validating needs no network.
# DEPLOY_K8S_VERSION picks another Kubernetes release to validate against.
set -euo pipefail

K8S_VERSION="${DEPLOY_K8S_VERSION:-1.34.0}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
deploy="deploy"
requirements="$deploy/validate-requirements.txt"
venv="target/deploy-venv"

fail() {
  echo "deploy/validate.sh: $*" >&2
  exit 1
}

# --- the venv ------------------------------------------------------------------------------
command -v python3 >/dev/null 2>&1 || fail "python3 is missing (make deps installs it)"
stamp="$(
  {
    cat "$requirements"
    python3 -c 'import sys; print(sys.version)'
  } | sha256sum | cut -d' ' -f1
)"
if [[ ! -x "$venv/bin/kubernetes-validate" || "$(cat "$venv/.stamp" 2>/dev/null)" != "$stamp" ]]; then
  echo "making $venv (pinned: $requirements)"
  rm -rf "$venv"
  mkdir -p target
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian's python3 has no venv module (ensurepip) without python3-venv.
    rm -rf "$venv"
    command -v apt-get >/dev/null 2>&1 || fail "python3 -m venv failed; install Python's venv module"
    if [[ "$(id -u)" -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
    echo "==> apt-get install python3-venv"
    $sudo apt-get update -qq >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$venv" || fail "python3 -m venv $venv failed"
  fi
  log="$(mktemp)"
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$requirements" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    rm -rf "$venv"
    fail "pip install -r $requirements failed"
  fi
  rm -f "$log"
  echo "$stamp" >"$venv/.stamp"
fi

# --- Kubernetes manifests --------------------------------------------------------------------
manifests=()
for file in "$deploy"/k8s/*.yaml "$deploy"/k8s/*.yml; do
  [[ -e "$file" ]] || continue
  [[ "$(basename "$file")" == kustomization.y*ml ]] && continue
  manifests+=("$file")
done
((${#manifests[@]} > 0)) || fail "no manifests in $deploy/k8s"
# --quiet prints only warnings and failures: any output (an unknown kind is only a warning)
# fails the check.
if ! out="$("$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${manifests[@]}" 2>&1)" ||
  [[ -n "$out" ]]; then
  echo "$out" >&2
  fail "kubernetes-validate --strict (Kubernetes $K8S_VERSION) rejected $deploy/k8s"
fi

# --- kustomization, the ConfigMap's troupe.toml, compose.yaml ----------------------------------
"$venv/bin/python" - "$deploy" "${manifests[@]}" <<'PY'
import os
import re
import sys

import yaml

deploy, manifests = sys.argv[1], sys.argv[2:]
errors = []


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# Every key a node accepts: deploy/troupe.toml mentions each one as `key =`, set or
# commented out (runtime/src/config.rs tests that).
with open(os.path.join(deploy, "troupe.toml")) as f:
    known_keys = set(re.findall(r"^#?\s*([a-z][a-z0-9_]*)\s*=", f.read(), re.M))
if "data_dir" not in known_keys or "join" not in known_keys:
    errors.append("deploy/troupe.toml: cannot read its keys")
# TROUPE_* variables troupe reads: one per key, and TROUPE_CONFIG and TROUPE_COOKIE.
known_env = {"TROUPE_" + k.upper() for k in known_keys} | {"TROUPE_CONFIG", "TROUPE_COOKIE"}

# kustomization.yaml lists exactly the manifests.
kdir = os.path.join(deploy, "k8s")
try:
    (kustomization,) = load_all(os.path.join(kdir, "kustomization.yaml"))
    listed = kustomization.get("resources") or []
    present = sorted(os.path.basename(m) for m in manifests)
    for r in listed:
        if not os.path.exists(os.path.join(kdir, r)):
            errors.append(f"k8s/kustomization.yaml: resource {r} does not exist")
    for m in present:
        if m not in listed:
            errors.append(f"k8s/kustomization.yaml: {m} is not in resources")
except (OSError, ValueError, yaml.YAMLError) as e:
    errors.append(f"k8s/kustomization.yaml: {e}")

# The ConfigMap's troupe.toml parses and sets only keys a node knows.
try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None
for path in manifests:
    for doc in load_all(path):
        if doc.get("kind") != "ConfigMap":
            continue
        for name, text in (doc.get("data") or {}).items():
            if not name.endswith(".toml"):
                continue
            where = f"{os.path.basename(path)}: {name}"
            if tomllib is None:
                print(f"note: {where} not parsed (Python < 3.11 has no tomllib)")
                continue
            try:
                config = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                errors.append(f"{where}: {e}")
                continue
            for key in sorted(set(config) - known_keys):
                errors.append(f"{where}: unknown key {key} (a node refuses it at start; deploy/troupe.toml names every key)")
    for doc in load_all(path):
        if doc.get("kind") != "StatefulSet":
            continue
        for c in doc["spec"]["template"]["spec"].get("containers", []):
            for env in c.get("env") or []:
                if env["name"].startswith("TROUPE_") and env["name"] not in known_env:
                    errors.append(f"{os.path.basename(path)}: container {c['name']}: troupe does not read {env['name']}")

# compose.yaml: services a, b and c, each with a healthcheck.
compose_path = os.path.join(deploy, "compose.yaml")
try:
    with open(compose_path) as f:
        compose = yaml.safe_load(f)
    services = (compose or {}).get("services") or {}
    cluster_address, joins = {}, {}
    for name in ("a", "b", "c"):
        service = services.get(name)
        if not isinstance(service, dict):
            errors.append(f"compose.yaml: no service {name}")
            continue
        test = (service.get("healthcheck") or {}).get("test")
        if not test or (service.get("healthcheck") or {}).get("disable"):
            errors.append(f"compose.yaml: service {name} has no healthcheck")
        elif "/healthz" not in " ".join(test if isinstance(test, list) else [test]):
            errors.append(f"compose.yaml: service {name}'s healthcheck does not ask /healthz")
        for port in service.get("ports") or []:
            if not str(port).startswith("127.0.0.1:"):
                errors.append(f"compose.yaml: service {name} publishes {port} beyond 127.0.0.1")
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
        for var in env:
            if var.startswith("TROUPE_") and var not in known_env:
                errors.append(f"compose.yaml: service {name}: troupe does not read {var}")
        # The cluster address is the service's fixed IP; b and c join a's.
        listen = str(env.get("TROUPE_CLUSTER_LISTEN") or "")
        nets = service.get("networks") or {}
        address = ((nets.get("troupe") or {}) if isinstance(nets, dict) else {}).get("ipv4_address")
        if not address or listen != f"{address}:4697":
            errors.append(f"compose.yaml: service {name}: TROUPE_CLUSTER_LISTEN is not its ipv4_address:4697")
        cluster_address[name] = listen
        joins[name] = env.get("TROUPE_JOIN")
    if joins.get("a"):
        errors.append("compose.yaml: service a must start alone (no TROUPE_JOIN)")
    for name in ("b", "c"):
        if name in joins and (not joins[name] or joins[name] != cluster_address.get("a")):
            errors.append(f"compose.yaml: service {name} does not join a's cluster address (TROUPE_JOIN)")
except (OSError, yaml.YAMLError) as e:
    errors.append(f"compose.yaml: {e}")

for e in errors:
    print(f"deploy/validate.sh: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY

# --- local-cluster.sh ------------------------------------------------------------------------
bash -n "$deploy/local-cluster.sh" || fail "bash -n $deploy/local-cluster.sh failed"
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck -S warning "$deploy/local-cluster.sh" "$deploy/validate.sh" ||
    fail "shellcheck found problems in $deploy/local-cluster.sh or $deploy/validate.sh"
fi

# --- troupe.service ----------------------------------------------------------------------------
unit="$deploy/troupe.service"
for section in Unit Service Install; do
  grep -qx "\[$section\]" "$unit" || fail "$unit has no [$section] section"
done
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify also checks that ExecStart's binary exists: check a copy that runs /bin/true
  # instead of /usr/local/bin/troupe. Any message (an unknown key, a bad value) fails.
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  sed 's#^ExecStart=/usr/local/bin/troupe #ExecStart=/bin/true #' "$unit" >"$tmp/troupe.service"
  grep -q '^ExecStart=/bin/true ' "$tmp/troupe.service" || fail "$unit: ExecStart is not /usr/local/bin/troupe ..."
  if ! out="$(systemd-analyze verify "$tmp/troupe.service" 2>&1)" || [[ -n "$out" ]]; then
    echo "${out//"$tmp/troupe.service"/$unit}" >&2
    fail "systemd-analyze verify rejected $unit"
  fi
fi

echo "deploy/ manifests: OK"

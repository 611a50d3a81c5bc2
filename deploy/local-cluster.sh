#!/usr/bin/env bash
# A three-node Troupe cluster (a, b, c) as local processes on 127.0.0.1: the topology of
# deploy/compose.yaml and deploy/k8s, without containers. Nothing listens beyond loopback.
#
#   deploy/local-cluster.sh [start] [options]   a alone, then b and c joining a (docs/cluster.md)
#   deploy/local-cluster.sh status  [options]   each node's process and /healthz
#   deploy/local-cluster.sh stop    [options]   SIGTERM to the three (SIGKILL after --stop-wait)
#
# Options (each also read from the environment variable in brackets):
#   --bin PATH          troupe binary [LOCAL_CLUSTER_BIN; default ./target/release/troupe,
#                       else ./target/debug/troupe]
#   --dir DIR           base directory: data dirs a/ b/ c/, logs, pid files, the cookie
#                       [LOCAL_CLUSTER_DIR; default ./troupe-cluster]
#   --gateway-port N    a's gateway port; b and c take the next two [LOCAL_CLUSTER_GATEWAY_PORT;
#                       default 8081, so 8081, 8082, 8083]
#   --cluster-port N    a's cluster port; b and c take the next two [LOCAL_CLUSTER_CLUSTER_PORT;
#                       default 4701, so 4701..4703, clear of a `make run` node's 4697]
#   --cookie-file FILE  shared cluster cookie [LOCAL_CLUSTER_COOKIE_FILE; default <dir>/cookie,
#                       generated on first start]
#   --wait SECONDS      how long each node may take to answer /healthz [LOCAL_CLUSTER_WAIT; 30]
#   --stop-wait SECONDS how long stop waits for the nodes to exit before SIGKILL
#                       [LOCAL_CLUSTER_STOP_WAIT; 45: a node may take 10 s for running tasks,
#                       15 s to stop its supervision tree and 10 s for its final flush]
#
# /healthz is polled with curl when it is installed, else over bash's /dev/tcp
# (LOCAL_CLUSTER_NO_CURL=1 forces the latter). The nodes get none of the caller's TROUPE_*
# variables: everything they need is passed as flags.
set -euo pipefail

NODES=(a b c)
prog="${0##*/}"

die() {
  echo "$prog: error: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

is_port() {
  [[ "$1" =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= 65533))
}

command_name="start"
if [[ $# -gt 0 && "$1" != -* ]]; then
  command_name="$1"
  shift
fi

# Options, then the environment; the ports, cookie and binary a cluster was started with are
# kept in <dir>/local-cluster.conf, so status, stop and a later start use them by default
# (a member must come back at the cluster address the others recorded).
opt_bin="" opt_gateway_port="" opt_cluster_port="" opt_cookie_file=""
base="${LOCAL_CLUSTER_DIR:-./troupe-cluster}"
wait_seconds="${LOCAL_CLUSTER_WAIT:-30}"
stop_wait="${LOCAL_CLUSTER_STOP_WAIT:-45}"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) opt_bin="${2:?--bin needs a path}"; shift 2 ;;
    --dir) base="${2:?--dir needs a directory}"; shift 2 ;;
    --gateway-port) opt_gateway_port="${2:?--gateway-port needs a port}"; shift 2 ;;
    --cluster-port) opt_cluster_port="${2:?--cluster-port needs a port}"; shift 2 ;;
    --cookie-file) opt_cookie_file="${2:?--cookie-file needs a file}"; shift 2 ;;
    --wait) wait_seconds="${2:?--wait needs seconds}"; shift 2 ;;
    --stop-wait) stop_wait="${2:?--stop-wait needs seconds}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option $1 (see $prog --help)" ;;
  esac
done

case "$command_name" in
  start | stop | status) ;;
  -h | --help | help) usage; exit 0 ;;
  *) die "unknown command $command_name: use start, stop or status" ;;
esac

# Absolute, so that the pid files and the printed paths hold wherever they are read from.
if [[ "$command_name" == start ]]; then
  mkdir -p -- "$base"
elif [[ ! -d "$base" ]]; then
  die "no cluster in $base (pass --dir, or LOCAL_CLUSTER_DIR)"
fi
base="$(cd -- "$base" && pwd)"
conf="$base/local-cluster.conf"
saved_bin="" saved_gateway_port="" saved_cluster_port="" saved_cookie_file=""
if [[ -f "$conf" ]]; then
  while IFS='=' read -r key value; do
    case "$key" in
      bin) saved_bin="$value" ;;
      gateway_port) saved_gateway_port="$value" ;;
      cluster_port) saved_cluster_port="$value" ;;
      cookie_file) saved_cookie_file="$value" ;;
    esac
  done <"$conf"
fi
bin="${opt_bin:-${LOCAL_CLUSTER_BIN:-$saved_bin}}"
gateway_port="${opt_gateway_port:-${LOCAL_CLUSTER_GATEWAY_PORT:-${saved_gateway_port:-8081}}}"
cluster_port="${opt_cluster_port:-${LOCAL_CLUSTER_CLUSTER_PORT:-${saved_cluster_port:-4701}}}"
cookie_file="${opt_cookie_file:-${LOCAL_CLUSTER_COOKIE_FILE:-${saved_cookie_file:-$base/cookie}}}"
[[ "$cookie_file" == /* ]] || cookie_file="$PWD/$cookie_file"

is_port "$gateway_port" || die "--gateway-port: not a port: $gateway_port"
is_port "$cluster_port" || die "--cluster-port: not a port: $cluster_port"
[[ "$wait_seconds" =~ ^[0-9]+$ ]] || die "--wait: not a number of seconds: $wait_seconds"
[[ "$stop_wait" =~ ^[0-9]+$ ]] || die "--stop-wait: not a number of seconds: $stop_wait"
if [[ -n "$saved_cluster_port" && "$cluster_port" != "$saved_cluster_port" && "$command_name" == start ]]; then
  echo "$prog: warning: this cluster's members recorded cluster ports from $saved_cluster_port; they are now given from $cluster_port" >&2
fi

# Node i (0, 1, 2): name, ports, files.
gw_port() { echo $((gateway_port + $1)); }
cl_port() { echo $((cluster_port + $1)); }
data_dir() { echo "$base/${NODES[$1]}"; }
log_file() { echo "$base/${NODES[$1]}.log"; }
pid_file() { echo "$base/${NODES[$1]}.pid"; }

# The pid recorded for node i, if that process is alive and is this node (a reused pid
# belonging to anything else is never signalled).
node_pid() {
  local file pid cmdline
  file="$(pid_file "$1")"
  [[ -f "$file" ]] || return 1
  pid="$(<"$file")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *" serve "* && "$cmdline" == *"--data-dir $(data_dir "$1") "* ]] || return 1
  echo "$pid"
}

# The /dev/tcp fallback: one HTTP/1.1 request with Connection: close, read to the end; run
# in a child bash under `timeout`.
healthz_tcp() {
  local port="$1" response status
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$port" >&3
  response="$(cat <&3)"
  exec 3<&-
  status="${response%%$'\r'*}"
  [[ "$status" == HTTP/1.?" 200 "* ]] || return 1
  printf '%s\n' "${response#*$'\r\n\r\n'}"
}

# GET http://127.0.0.1:<port>/healthz; prints the body, succeeds on HTTP 200 only.
healthz() {
  local port="$1"
  if [[ -z "${LOCAL_CLUSTER_NO_CURL:-}" ]] && command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 2 "http://127.0.0.1:$port/healthz" 2>/dev/null
  else
    # shellcheck disable=SC2016 # $1 is the child's
    timeout 3 bash -c "$(declare -f healthz_tcp)"'; healthz_tcp "$1"' healthz "$port" 2>/dev/null
  fi
}

# Whether anything accepts connections on 127.0.0.1:<port>.
port_in_use() {
  # shellcheck disable=SC2016 # $1 is the child's
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' port "$1" 2>/dev/null
}

# Waits until node i answers /healthz as itself; fails naming its log if it exits first or
# does not answer within --wait seconds.
wait_healthy() {
  local i="$1" name="${NODES[$1]}" port body deadline
  port="$(gw_port "$i")"
  deadline=$((SECONDS + wait_seconds))
  while :; do
    if body="$(healthz "$port")" && [[ "$body" == *'"node":"'"$name"'"'* ]]; then
      return 0
    fi
    if ! kill -0 "$(<"$(pid_file "$i")")" 2>/dev/null; then
      echo "$prog: error: node $name exited before it answered /healthz; its log, $(log_file "$i"), ends with:" >&2
      tail -n 15 "$(log_file "$i")" | sed 's/^/    /' >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "$prog: error: node $name did not answer http://127.0.0.1:$port/healthz within ${wait_seconds} s;" \
        "see its log, $(log_file "$i") (last lines below). It is still running: '$0 stop --dir $base' stops it." >&2
      tail -n 15 "$(log_file "$i")" | sed 's/^/    /' >&2
      return 1
    fi
    sleep 0.5
  done
}

start_node() {
  local i="$1" name="${NODES[$1]}" args pid
  args=(serve --node-name "$name" --data-dir "$(data_dir "$i")"
    --listen "127.0.0.1:$(gw_port "$i")" --cluster-listen "127.0.0.1:$(cl_port "$i")"
    --cookie-file "$cookie_file")
  if ((i > 0)); then
    args+=(--join "127.0.0.1:$(cl_port 0)")
  fi
  printf '\n==> %s %s\n' "$(date '+%F %T')" "$bin ${args[*]}" >>"$(log_file "$i")"
  # A session of its own (setsid), so that a Ctrl-C or a closed terminal does not reach it,
  # and an environment without the caller's TROUPE_* settings (flags win over them, but
  # a stray TROUPE_JOIN or TROUPE_CONFIG would still apply to what no flag sets).
  (
    while read -r var; do unset "$var"; done < <(compgen -e | grep '^TROUPE_' || true)
    exec setsid "$bin" "${args[@]}"
  ) </dev/null >>"$(log_file "$i")" 2>&1 &
  pid=$!
  echo "$pid" >"$(pid_file "$i")"
}

cmd_start() {
  local i running="" fresh=1
  if [[ -z "$bin" ]]; then
    for candidate in ./target/release/troupe ./target/debug/troupe; do
      if [[ -x "$candidate" ]]; then
        bin="$candidate"
        break
      fi
    done
    [[ -n "$bin" ]] || die "no troupe binary at ./target/release/troupe or ./target/debug/troupe: build one (make build) or pass --bin"
  fi
  [[ -x "$bin" && -f "$bin" ]] || die "not an executable file: $bin"
  bin="$(cd -- "$(dirname -- "$bin")" && pwd)/$(basename -- "$bin")"
  command -v setsid >/dev/null 2>&1 || die "setsid (util-linux) is needed"

  local missing=()
  for i in 0 1 2; do
    if pid="$(node_pid "$i")"; then
      running+=" ${NODES[$i]} (pid $pid)"
    else
      missing+=("$i")
    fi
  done
  ((${#missing[@]})) || die "already running in $base:$running; '$0 stop --dir $base' first"
  for i in "${missing[@]}"; do
    for port in "$(gw_port "$i")" "$(cl_port "$i")"; do
      ! port_in_use "$port" || die "127.0.0.1:$port is already in use (node ${NODES[$i]} needs it); choose other ports with --gateway-port / --cluster-port"
    done
  done

  chmod 0700 "$base"
  # Keep a base dir inside a repository out of git.
  [[ -e "$base/.gitignore" ]] || printf '*\n' >"$base/.gitignore"
  if [[ ! -s "$cookie_file" ]]; then
    [[ "$cookie_file" == "$base/cookie" ]] || die "cookie file $cookie_file is missing or empty"
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$cookie_file")
  fi
  printf 'bin=%s\ngateway_port=%s\ncluster_port=%s\ncookie_file=%s\n' \
    "$bin" "$gateway_port" "$cluster_port" "$cookie_file" >"$conf"
  for i in 0 1 2; do
    if [[ -e "$(data_dir "$i")/troupe.redb" ]]; then
      fresh=0
    fi
  done

  if [[ -n "$running" ]]; then
    # Some members run: start the others again (a node that was lost rejoins its cluster).
    echo "Already running:$running; starting the others again"
    for i in "${missing[@]}"; do
      start_node "$i"
    done
  elif ((fresh)); then
    # A new cluster: a alone first (it leads a cluster of one), then b and c join it.
    echo "Starting node a alone (data in $(data_dir 0))"
    start_node 0
    wait_healthy 0
    echo "Starting nodes b and c, joining a at 127.0.0.1:$(cl_port 0)"
    start_node 1
    start_node 2
  else
    # The members of an existing cluster: none comes up without a majority of them, so they
    # start together (b and c keep --join, which a member may).
    echo "Restarting the cluster's three members in $base"
    for i in 0 1 2; do
      start_node "$i"
    done
  fi
  for i in 0 1 2; do
    wait_healthy "$i"
  done
  # The node writes its own pid to <data dir>/troupe.pid once it is up: record that one.
  for i in 0 1 2; do
    if [[ -s "$(data_dir "$i")/troupe.pid" ]]; then
      cp "$(data_dir "$i")/troupe.pid" "$(pid_file "$i")"
    fi
  done

  echo
  echo "Troupe cluster of three running on 127.0.0.1 (base dir $base):"
  for i in 0 1 2; do
    printf '  %s  GraphQL http://127.0.0.1:%s/graphql   cluster 127.0.0.1:%s   pid %s   log %s\n' \
      "${NODES[$i]}" "$(gw_port "$i")" "$(cl_port "$i")" "$(node_pid "$i" || echo '?')" "$(log_file "$i")"
  done
  echo
  echo "Admin token (each node writes one; every one works on every node):"
  for i in 0 1 2; do
    echo "  $(data_dir "$i")/admin.token"
  done
  echo
  echo "  TOKEN=\$(cat $(data_dir 0)/admin.token)"
  echo "  curl -s -H \"Authorization: Bearer \$TOKEN\" -H 'content-type: application/json' \\"
  echo "    -d '{\"query\":\"{ cluster { leader members { name role state } } }\"}' http://127.0.0.1:$(gw_port 0)/graphql"
  echo
  echo "Status: $0 status --dir $base"
  echo "Stop:   $0 stop --dir $base"
}

# SIGTERM to every node at once, then SIGKILL to any still running after --stop-wait seconds.
# At once rather than one by one: each node waits (at most 10 s) until what it wrote is
# committed, and the last one up finds no majority to take its stop and says so at once
# (docs/cluster.md, Stopping the whole cluster); in parallel the three stop in a few seconds.
cmd_stop() {
  local i pid pids=() names=() left deadline
  for i in 0 1 2; do
    if pid="$(node_pid "$i")"; then
      kill -TERM "$pid" 2>/dev/null || continue
      pids+=("$pid")
      names+=("${NODES[$i]}")
    fi
  done
  if ((${#pids[@]} == 0)); then
    rm -f "$base"/{a,b,c}.pid
    echo "No node is running in $base"
    return 0
  fi
  echo "Stopping ${names[*]} (SIGTERM; pids ${pids[*]})"
  deadline=$((SECONDS + stop_wait))
  while :; do
    left=()
    for pid in "${pids[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then left+=("$pid"); fi
    done
    ((${#left[@]} > 0)) || break
    if ((SECONDS >= deadline)); then
      echo "$prog: still running after ${stop_wait} s, SIGKILL: ${left[*]}" >&2
      kill -KILL "${left[@]}" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$base"/{a,b,c}.pid
  echo "Stopped (data kept in $base; '$0 start --dir $base' starts the same cluster again)"
}

cmd_status() {
  local i pid body up=0
  for i in 0 1 2; do
    if pid="$(node_pid "$i")"; then
      if body="$(healthz "$(gw_port "$i")")"; then
        printf '  %s  running (pid %s)  healthy  %s   GraphQL http://127.0.0.1:%s/graphql\n' \
          "${NODES[$i]}" "$pid" "$body" "$(gw_port "$i")"
        up=$((up + 1))
      else
        printf '  %s  running (pid %s)  NOT healthy (http://127.0.0.1:%s/healthz)   log %s\n' \
          "${NODES[$i]}" "$pid" "$(gw_port "$i")" "$(log_file "$i")"
      fi
    else
      printf '  %s  stopped   log %s\n' "${NODES[$i]}" "$(log_file "$i")"
    fi
  done
  echo "$up of 3 nodes healthy (base dir $base)"
  ((up == 3))
}

"cmd_$command_name"

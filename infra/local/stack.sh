#!/usr/bin/env bash
# The production stack of nasops on one machine, every server bound to 127.0.0.1:
#   PostgreSQL (a cluster of its own, databases mlflow / predictions / prefect), an MLflow tracking server on it
#   with an artifact root, a Prefect server and a process work-pool worker, a Dask scheduler with 2 workers,
#   Prometheus scraping the gateway, and the gateway itself (`nasops serve --workers 2`).
#
# Usage: infra/local/stack.sh up|status|down|env
#   up      start what is not running, return once each component answers (exit 1 with the log tail otherwise)
#   status  PID, URL and health of each component (exit 0 all healthy, 1 something is not, 3 nothing runs)
#   down    stop exactly what `up` started, by PID and process group, and check its ports are closed
#   env     the variables to export to use the stack:  eval "$(infra/local/stack.sh env)"
#
# All state lives under $NASOPS_STACK_DIR (default .nasops/stack): run/ (PID files), logs/ (one log per
# component), secrets/ (tokens, PostgreSQL password file; 0600), postgres/, mlflow/artifacts/, prefect/,
# prometheus/, gateway/. Ports: NASOPS_STACK_<COMPONENT>_PORT (see `defaults` below); `up` records them in
# stack.env and `status`/`down` read them back from there.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv_bin="${VENV:-$root/.venv}/bin"
py="$venv_bin/python"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true

COMPONENTS=(postgres mlflow prefect prefect-worker dask-scheduler dask-worker-1 dask-worker-2 prometheus gateway)
PG_USER=nasops
WORK_POOL="${NASOPS_STACK_WORK_POOL:-nasops-process}"

die() { echo "error: $*" >&2; exit 2; }

state_dir() {
  local dir="${NASOPS_STACK_DIR:-$root/.nasops/stack}"
  mkdir -p "$dir" || die "cannot create the stack directory $dir; set NASOPS_STACK_DIR to a writable place"
  (cd "$dir" && pwd)
}
STATE="$(state_dir)"
umask 077  # everything the stack writes is its owner's only (secrets, databases, logs)
RUN="$STATE/run" LOGS="$STATE/logs" SECRETS="$STATE/secrets"

# --- configuration: ports, chosen at the first `up` and read back afterwards -------------------------------
defaults() {
  PG_PORT="${NASOPS_STACK_POSTGRES_PORT:-55432}"
  MLFLOW_PORT="${NASOPS_STACK_MLFLOW_PORT:-5000}"
  PREFECT_PORT="${NASOPS_STACK_PREFECT_PORT:-4300}"           # not Prefect's 4200: leaves that to other servers
  WORKER_PORT="${NASOPS_STACK_PREFECT_WORKER_PORT:-4301}"     # the worker's health endpoint
  DASK_PORT="${NASOPS_STACK_DASK_PORT:-8786}"
  DASK_DASHBOARD_PORT="${NASOPS_STACK_DASK_DASHBOARD_PORT:-8787}"
  PROM_PORT="${NASOPS_STACK_PROMETHEUS_PORT:-9090}"
  GATEWAY_PORT="${NASOPS_STACK_GATEWAY_PORT:-8000}"
}

save_config() {
  cat >"$STATE/stack.env" <<EOF
PG_PORT=$PG_PORT
MLFLOW_PORT=$MLFLOW_PORT
PREFECT_PORT=$PREFECT_PORT
WORKER_PORT=$WORKER_PORT
DASK_PORT=$DASK_PORT
DASK_DASHBOARD_PORT=$DASK_DASHBOARD_PORT
PROM_PORT=$PROM_PORT
GATEWAY_PORT=$GATEWAY_PORT
EOF
}

load_config() {  # the ports of the stack as last started (defaults when it never was)
  defaults
  if [ -f "$STATE/stack.env" ]; then
    # shellcheck disable=SC1091
    . "$STATE/stack.env"
  fi
  derive
}

derive() {
  all_ports=("$PG_PORT" "$MLFLOW_PORT" "$PREFECT_PORT" "$WORKER_PORT" "$DASK_PORT" "$DASK_DASHBOARD_PORT"
             "$PROM_PORT" "$GATEWAY_PORT")
  MLFLOW_URL="http://127.0.0.1:$MLFLOW_PORT"
  PREFECT_URL="http://127.0.0.1:$PREFECT_PORT"
  GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT"
  PROM_URL="http://127.0.0.1:$PROM_PORT"
  DASK_ADDRESS="tcp://127.0.0.1:$DASK_PORT"
  DASK_HTTP="http://127.0.0.1:$DASK_DASHBOARD_PORT"
  PG_HOSTPORT="127.0.0.1:$PG_PORT"
  LOG_URL="postgresql+psycopg://$PG_USER@$PG_HOSTPORT/predictions"
}

# --- processes: one PID file per component, "pid start-time" (a recycled PID is not mistaken for ours) -------
proc_stat() {  # "state start-time" of PID (fields 3 and 22 of /proc/PID/stat, counted after the command name)
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  set -- $stat
  echo "$1 ${20}"
}

start_time() { local s; s="$(proc_stat "$1")" || return 1; echo "${s#* }"; }

pid_of() {  # the PID of a running component (not a zombie, not a recycled PID), or nothing
  local file="$RUN/$1.pid" pid started now
  [ -f "$file" ] || return 1
  read -r pid started <"$file" || return 1
  now="$(proc_stat "$pid" 2>/dev/null)" || return 1
  [ "${now#* }" = "$started" ] && [ "${now%% *}" != Z ] || return 1
  echo "$pid"
}

launch() {  # name, then `env` arguments (-u VAR, VAR=value) and the command (run by setsid: its own session)
  local name=$1; shift
  env "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  local pid=$!
  echo "$pid $(start_time "$pid")" >"$RUN/$name.pid"
  STARTED+=("$name")
  echo "  started $name (pid $pid, log $LOGS/$name.log)"
}

# A component's process group keeps the leader's PID as its ID, and Linux does not hand out a PID that is still a
# group ID: while the group has members they are the component's processes (the leader may have died first).
group_alive() { kill -0 -- "-$1" 2>/dev/null; }

owned_group() {  # name -> the group ID of a component that still has processes, or nothing
  local file="$RUN/$1.pid" pid
  pid="$(pid_of "$1")" && { echo "$pid"; return 0; }
  [ -f "$file" ] && read -r pid _ <"$file" && [ -n "$pid" ] && group_alive "$pid" && { echo "$pid"; return 0; }
  return 1
}

send_stop() {  # name: ask it to stop (postgres: INT = fast shutdown; the others: TERM)
  local pid sig=TERM
  pid="$(owned_group "$1")" || return 0
  [ "$1" = postgres ] && sig=INT
  kill -s "$sig" -- "-$pid" 2>/dev/null || true
}

await_stop() {  # name, seconds of grace before its process group is killed
  local name=$1 grace=$2 pid i
  if ! pid="$(owned_group "$name")"; then
    rm -f "$RUN/$name.pid"
    return 0
  fi
  for i in $(seq 1 $((grace * 5))); do group_alive "$pid" || break; sleep 0.2; done
  if group_alive "$pid"; then
    echo "  $name (pid $pid) still running ${grace} s after being asked to stop: killing its process group"
    kill -s KILL -- "-$pid" 2>/dev/null || true
    for i in $(seq 1 25); do group_alive "$pid" || break; sleep 0.2; done
  fi
  rm -f "$RUN/$name.pid"
  echo "  stopped $name (pid $pid)"
}

grace_of() {
  case "$1" in
    postgres) echo 30 ;;  # fast shutdown: cuts sessions, checkpoints, exits
    # Prefect's worker turns TERM into a graceful SIGINT that waits for running flow runs and, in Prefect 3.8,
    # does not return when idle either: 5 s, then its group is killed (flow runs it started are in that group
    # and end as crashed; a retry redoes them)
    prefect-worker) echo 5 ;;
    *) echo 20 ;;
  esac
}

stop_tier() {  # names: asked together, then awaited (callers first, what they call after)
  local name
  for name in "$@"; do send_stop "$name"; done
  for name in "$@"; do await_stop "$name" "$(grace_of "$name")"; done
}

# --- probes ---------------------------------------------------------------------------------------------
http_get() {  # url -> "<status> <body>" (status 000: no answer)
  "$py" - "$1" <<'PY'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        print(r.status, r.read(4000).decode(errors="replace").replace("\n", " "))
except urllib.error.HTTPError as e:
    print(e.code, e.read(4000).decode(errors="replace").replace("\n", " "))
except Exception as e:
    print("000", type(e).__name__)
PY
}

json_field() {  # json text, python expression on `d` -> printed value (empty when it does not parse)
  "$py" -c 'import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null || true
}

ports_in_use() {  # the given ports that something already listens on
  "$py" - "$@" <<'PY'
import socket, sys
for port in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", int(port)))
    except OSError:
        print(port)
    finally:
        s.close()
PY
}

pg_bin() {  # PostgreSQL server binaries: the newest /usr/lib/postgresql/<v>/bin (Debian keeps them off PATH), or PATH
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
    [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ] && [ -x "$dir/pg_isready" ] && { echo "$dir"; return; }
  done
  command -v initdb >/dev/null && command -v postgres >/dev/null && { dirname "$(command -v postgres)"; return; }
  return 1
}

as_pg_owner() {  # PostgreSQL refuses to run as root: as root, run it as the `postgres` system user
  if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi
}

# --- health of each component: prints "ok ..." or a reason; returns 0 when healthy ---------------------------
health() {
  local name=$1 out code body
  case "$name" in
    postgres)
      "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 && echo "ok (accepting connections)" && return
      echo "not accepting connections"; return 1 ;;
    mlflow) url_health "$MLFLOW_URL/health" ;;
    prefect) url_health "$PREFECT_URL/api/health" ;;
    prefect-worker) url_health "http://127.0.0.1:$WORKER_PORT/health" "pool $WORK_POOL" ;;
    prometheus)
      url_health "$PROM_URL/-/ready" >/dev/null || { echo "not ready"; return 1; }
      body="$(http_get "$PROM_URL/api/v1/targets")"; body="${body#* }"
      out="$(json_field "$body" \
        '",".join(t["health"] for t in d["data"]["activeTargets"] if t["labels"]["job"]=="nasops-gateway")')"
      echo "ok (gateway target 127.0.0.1:$GATEWAY_PORT: ${out:-not yet listed})" ;;
    dask-scheduler)
      url_health "$DASK_HTTP/health" >/dev/null || { echo "not answering on $DASK_HTTP/health"; return 1; }
      body="$(http_get "$DASK_HTTP/json/counts.json")"; body="${body#* }"
      echo "ok ($(json_field "$body" 'd["workers"]') workers)" ;;
    dask-worker-*)
      body="$(http_get "$DASK_HTTP/json/identity.json")"; body="${body#* }"
      out="$(json_field "$body" '"yes" if "'"$name"'" in [w.get("name") for w in d["workers"].values()] else "no"')"
      [ "$out" = yes ] && echo "ok (registered with the scheduler)" && return
      echo "not registered with the scheduler"; return 1 ;;
    gateway)
      out="$(http_get "$GATEWAY_URL/healthz")"
      [ "${out%% *}" = 200 ] || { echo "not live (/healthz: ${out:0:80})"; return 1; }
      out="$(http_get "$GATEWAY_URL/readyz")"; code="${out%% *}"; body="${out#* }"
      if [ "$code" = 200 ]; then echo "ok (ready: $(json_field "$body" 'd["versions"]'))"
      elif grep -qi champion <<<"$body"; then echo "live, waiting for a champion (run a refresh to register one)"
      else echo "live, not ready: $(json_field "$body" 'd.get("detail", d)')"; fi ;;
  esac
}

url_health() {  # url [note]
  local out
  out="$(http_get "$1")"
  if [ "${out%% *}" = 200 ]; then echo "ok${2:+ ($2)}"; return 0; fi
  echo "no answer from $1 (${out:0:60})"; return 1
}

url_of() {
  case "$1" in
    postgres) echo "postgresql://$PG_HOSTPORT" ;;
    mlflow) echo "$MLFLOW_URL" ;;
    prefect) echo "$PREFECT_URL" ;;
    prefect-worker) echo "http://127.0.0.1:$WORKER_PORT/health" ;;
    dask-scheduler) echo "$DASK_ADDRESS" ;;
    dask-worker-*) echo "-" ;;
    prometheus) echo "$PROM_URL" ;;
    gateway) echo "$GATEWAY_URL" ;;
  esac
}

wait_healthy() {  # name, timeout seconds: until health passes; on death or timeout print the log tail, return 1
  local name=$1 timeout=$2 deadline pid
  deadline=$((SECONDS + timeout))
  while [ $SECONDS -lt $deadline ]; do
    if ! pid="$(pid_of "$name")"; then
      echo "error: $name exited during start-up; the end of $LOGS/$name.log:" >&2
      tail -n 25 "$LOGS/$name.log" >&2 || true
      return 1
    fi
    health "$name" >/dev/null 2>&1 && { echo "  $name answers (${SECONDS} s since up began)"; return 0; }
    sleep 1
  done
  echo "error: $name did not answer within ${timeout}s; the end of $LOGS/$name.log:" >&2
  tail -n 25 "$LOGS/$name.log" >&2 || true
  return 1
}

# --- secrets: generated once, kept across restarts, never printed ---------------------------------------------
secret() {  # file name -> its path; creates 32 random bytes as hex when absent
  local file="$SECRETS/$1"
  if [ ! -s "$file" ]; then
    if command -v openssl >/dev/null; then openssl rand -hex 32 >"$file"
    else "$py" -c 'import secrets; print(secrets.token_hex(32))' >"$file"; fi
    chmod 600 "$file"
  fi
  echo "$file"
}

pgpass() {  # libpq/asyncpg password file: no password in any URL, command line or log
  local password
  password="$(cat "$(secret postgres-password)")"
  echo "127.0.0.1:$PG_PORT:*:$PG_USER:$password" >"$SECRETS/pgpass"
  chmod 600 "$SECRETS/pgpass"
  echo "$SECRETS/pgpass"
}

# --- the components ---------------------------------------------------------------------------------------
start_postgres() {
  local data="$STATE/postgres/data"
  mkdir -p "$STATE/postgres"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$STATE/postgres"
    as_pg_owner test -w "$STATE/postgres" || die "running as root, PostgreSQL runs as the 'postgres' user, who \
cannot reach $STATE; set NASOPS_STACK_DIR to a directory every user can traverse (or run as a normal user)"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    local pwfile="$STATE/postgres/pwfile"
    cp "$(secret postgres-password)" "$pwfile"
    [ "$(id -u)" = 0 ] && chown postgres: "$pwfile"
    as_pg_owner env LC_ALL=C LANG=C "$PG_BIN/initdb" -D "$data" -U "$PG_USER" --pwfile="$pwfile" \
      --auth=scram-sha-256 --encoding=UTF8 --locale=C >>"$LOGS/postgres.log" 2>&1 \
      || { rm -f "$pwfile"; echo "error: initdb failed; see $LOGS/postgres.log" >&2; return 1; }
    rm -f "$pwfile"
  fi
  # no Unix socket (TCP on loopback only, password auth); small memory footprint
  launch postgres LC_ALL=C setsid $(as_pg_cmd) "$PG_BIN/postgres" -D "$data" -h 127.0.0.1 -p "$PG_PORT" \
    -k "" -c shared_buffers=32MB -c max_connections=100 -c logging_collector=off
}

as_pg_cmd() { [ "$(id -u)" = 0 ] && echo "setpriv --reuid=postgres --regid=postgres --init-groups --" || true; }

create_databases() {
  PGPASSFILE="$(pgpass)" "$py" - "$PG_PORT" "$PG_USER" <<'PY'
import sys, psycopg
port, user = int(sys.argv[1]), sys.argv[2]
with psycopg.connect(host="127.0.0.1", port=port, user=user, dbname="postgres", autocommit=True) as conn:
    have = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
    for name in ("mlflow", "predictions", "prefect"):
        if name not in have:
            conn.execute(f'CREATE DATABASE "{name}"')
PY
}

start_mlflow() {
  mkdir -p "$STATE/mlflow/artifacts"
  # MLflow's job runner (huey consumers for GenAI scoring jobs, ~1.7 GB) is not used by nasops: off
  launch mlflow PGPASSFILE="$SECRETS/pgpass" MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    setsid "$venv_bin/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
    --backend-store-uri "postgresql+psycopg://$PG_USER@$PG_HOSTPORT/mlflow" \
    --artifacts-destination "$STATE/mlflow/artifacts"
}

start_prefect() {
  mkdir -p "$STATE/prefect"
  launch prefect PREFECT_HOME="$STATE/prefect" PGPASSFILE="$SECRETS/pgpass" \
    PREFECT_SERVER_DATABASE_CONNECTION_URL="postgresql+asyncpg://$PG_USER@$PG_HOSTPORT/prefect" \
    PREFECT_UI_API_URL="$PREFECT_URL/api" \
    setsid "$venv_bin/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT"
}

start_prefect_worker() {
  local env=(PREFECT_HOME="$STATE/prefect" PREFECT_API_URL="$PREFECT_URL/api")
  if ! env "${env[@]}" "$venv_bin/prefect" work-pool inspect "$WORK_POOL" >/dev/null 2>&1; then
    env "${env[@]}" "$venv_bin/prefect" work-pool create "$WORK_POOL" --type process >>"$LOGS/prefect-worker.log" 2>&1 \
      || { echo "error: could not create the work pool; see $LOGS/prefect-worker.log" >&2; return 1; }
  fi
  # the worker runs flows as subprocesses: they reach the stack through the same variables a user exports
  launch prefect-worker "${env[@]}" \
    PREFECT_WORKER_WEBSERVER_HOST=127.0.0.1 PREFECT_WORKER_WEBSERVER_PORT="$WORKER_PORT" \
    PREFECT_WORKER_QUERY_SECONDS=5 \
    MLFLOW_TRACKING_URI="$MLFLOW_URL" NASOPS_PREDICTION_LOG_URL="$LOG_URL" PGPASSFILE="$SECRETS/pgpass" \
    setsid "$venv_bin/prefect" worker start --pool "$WORK_POOL" --type process --with-healthcheck
}

start_dask_scheduler() {
  launch dask-scheduler setsid "$venv_bin/dask" scheduler --host 127.0.0.1 --port "$DASK_PORT" \
    --dashboard-address "127.0.0.1:$DASK_DASHBOARD_PORT"
}

start_dask_worker() {  # name
  launch "$1" setsid "$venv_bin/dask" worker "$DASK_ADDRESS" --name "$1" --host 127.0.0.1 --nthreads 1 \
    --memory-limit 2GiB --dashboard-address 127.0.0.1:0 --local-directory "$STATE/dask/$1"
}

start_prometheus() {
  mkdir -p "$STATE/prometheus"
  cp "$root/infra/prometheus/alerts.yml" "$STATE/prometheus/alerts.yml"
  sed "s/GATEWAY_TARGET/127.0.0.1:$GATEWAY_PORT/" "$here/prometheus-local.yml" >"$STATE/prometheus/prometheus.yml"
  launch prometheus setsid prometheus --config.file="$STATE/prometheus/prometheus.yml" \
    --storage.tsdb.path="$STATE/prometheus/data" --storage.tsdb.retention.time=7d \
    --web.listen-address="127.0.0.1:$PROM_PORT"
}

start_gateway() {
  mkdir -p "$STATE/gateway"
  # challenger weight 0 until a rollout sets it through the admin API; the tokens are read from their files by
  # the gateway (never on a command line; a user's exported NASOPS_GATEWAY_*_TOKEN must not override them)
  launch gateway -u NASOPS_GATEWAY_ADMIN_TOKEN -u NASOPS_GATEWAY_FEEDBACK_TOKEN \
    NASOPS_HOME="$STATE/gateway" MLFLOW_TRACKING_URI="$MLFLOW_URL" NASOPS_PREDICTION_LOG_URL="$LOG_URL" \
    PGPASSFILE="$SECRETS/pgpass" NASOPS_GATEWAY_CHALLENGER_WEIGHT=0 \
    NASOPS_GATEWAY_ADMIN_TOKEN_FILE="$(secret admin-token)" \
    NASOPS_GATEWAY_FEEDBACK_TOKEN_FILE="$(secret feedback-token)" \
    setsid "$venv_bin/nasops" serve --host 127.0.0.1 --port "$GATEWAY_PORT" --workers 2
}

# --- commands ---------------------------------------------------------------------------------------------
preflight() {
  [ -x "$venv_bin/nasops" ] || die "$venv_bin/nasops not found: run \`make install\` first (or set VENV)"
  PG_BIN="$(pg_bin)" || die "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin nor on PATH \
(Debian: apt-get install postgresql; \`make system-deps\` does it)"
  command -v prometheus >/dev/null || die "prometheus not found on PATH (Debian: apt-get install prometheus; \
\`make system-deps\` does it)"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root, and PostgreSQL refuses root; no 'postgres' user exists \
to run it as (apt-get install postgresql creates it, or run as a normal user)"
    command -v setpriv >/dev/null || die "running as root, PostgreSQL must run as 'postgres' and setpriv (package \
util-linux) is missing to switch to it; install it or run as a normal user"
  fi
}

any_running() { local n; for n in "${COMPONENTS[@]}"; do pid_of "$n" >/dev/null && return 0; done; return 1; }

port_of() {
  case "$1" in
    postgres) echo "$PG_PORT" ;;
    mlflow) echo "$MLFLOW_PORT" ;;
    prefect) echo "$PREFECT_PORT" ;;
    prefect-worker) echo "$WORKER_PORT" ;;
    dask-scheduler) echo "$DASK_PORT $DASK_DASHBOARD_PORT" ;;
    prometheus) echo "$PROM_PORT" ;;
    gateway) echo "$GATEWAY_PORT" ;;
  esac
}

start_if_stopped() {  # name, start command (words)
  local name=$1 pid; shift
  if pid="$(pid_of "$name")"; then echo "  $name already running (pid $pid)"; return 0; fi
  "$@"
}

failed() {  # undo this `up`: stop what it started, newest first
  local i
  echo "error: the stack did not come up; stopping what this run started" >&2
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    stop_tier "${STARTED[i]}" >&2
  done
  exit 1
}

check_ports() {  # every port a number in 1024-65535, no two components on the same one
  local port seen=" "
  for port in "${all_ports[@]}"; do
    [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1024 ] && [ "$port" -le 65535 ] || die "port $port is not a number \
in 1024-65535; fix the NASOPS_STACK_<COMPONENT>_PORT variable that sets it"
    [[ "$seen" != *" $port "* ]] || die "port $port is given to two components; give each \
NASOPS_STACK_<COMPONENT>_PORT its own port"
    seen+="$port "
  done
}

cmd_up() {
  preflight
  if any_running; then load_config; else defaults; derive; fi
  check_ports
  local name taken wanted=()
  for name in "${COMPONENTS[@]}"; do pid_of "$name" >/dev/null || wanted+=($(port_of "$name")); done
  taken=""
  if [ "${#wanted[@]}" -gt 0 ]; then taken="$(ports_in_use "${wanted[@]}")"; fi
  [ -z "$taken" ] || die "port(s) $(echo $taken) on 127.0.0.1 already in use by another program; choose others \
with NASOPS_STACK_<COMPONENT>_PORT (e.g. NASOPS_STACK_MLFLOW_PORT=5001), listed at the head of $0"
  mkdir -p "$RUN" "$LOGS" "$SECRETS" "$STATE/dask"
  chmod 700 "$SECRETS"
  save_config
  pgpass >/dev/null
  echo "starting the nasops stack in $STATE"
  STARTED=()
  # independent pieces first; each dependent piece once what it needs answers
  start_if_stopped postgres start_postgres || failed
  start_if_stopped dask-scheduler start_dask_scheduler || failed
  start_if_stopped prometheus start_prometheus || failed
  wait_healthy postgres 60 || failed
  wait_healthy prometheus 60 || failed
  create_databases || failed
  start_if_stopped mlflow start_mlflow || failed
  start_if_stopped prefect start_prefect || failed
  wait_healthy dask-scheduler 60 || failed
  start_if_stopped dask-worker-1 start_dask_worker dask-worker-1 || failed
  start_if_stopped dask-worker-2 start_dask_worker dask-worker-2 || failed
  wait_healthy mlflow 150 || failed
  start_if_stopped gateway start_gateway || failed
  wait_healthy prefect 150 || failed
  start_if_stopped prefect-worker start_prefect_worker || failed
  for name in dask-worker-1 dask-worker-2 prefect-worker gateway; do wait_healthy "$name" 150 || failed; done
  echo
  cmd_status || true
  echo
  echo "# use the stack from a shell:  eval \"\$($0 env)\""
  cmd_env
}

cmd_status() {
  load_config
  PG_BIN="$(pg_bin)" || PG_BIN=/nonexistent
  local name pid h running=0 healthy=0
  printf '%-15s %-8s %-34s %s\n' COMPONENT PID URL HEALTH
  for name in "${COMPONENTS[@]}"; do
    if pid="$(pid_of "$name")"; then
      running=$((running + 1))
      if h="$(health "$name" 2>&1)"; then healthy=$((healthy + 1)); fi
    else
      pid="-" h="stopped"
    fi
    printf '%-15s %-8s %-34s %s\n' "$name" "$pid" "$(url_of "$name")" "$h"
  done
  [ "$running" -gt 0 ] || return 3
  [ "$healthy" -eq "${#COMPONENTS[@]}" ] || return 1
}

cmd_down() {
  load_config
  local busy
  echo "stopping the nasops stack in $STATE"
  stop_tier gateway prefect-worker dask-worker-1 dask-worker-2 prometheus
  stop_tier dask-scheduler prefect mlflow
  stop_tier postgres
  busy="$(ports_in_use "${all_ports[@]}")"
  if [ -n "$busy" ]; then
    echo "warning: port(s) $(echo $busy) still in use on 127.0.0.1 (not by a process this stack started)" >&2
    return 1
  fi
  echo "stopped; state (databases, artifacts, logs, tokens) kept in $STATE (delete the directory to start afresh)"
}

cmd_env() {
  load_config
  cat <<EOF
export MLFLOW_TRACKING_URI=$MLFLOW_URL
export PREFECT_API_URL=$PREFECT_URL/api
export PGPASSFILE=$SECRETS/pgpass
export NASOPS_PREDICTION_LOG_URL=$LOG_URL
export NASOPS_GATEWAY_URL=$GATEWAY_URL
export NASOPS_GATEWAY_ADMIN_TOKEN="\$(cat $SECRETS/admin-token)"
export NASOPS_GATEWAY_FEEDBACK_TOKEN="\$(cat $SECRETS/feedback-token)"
# Prefect UI: $PREFECT_URL   work pool: $WORK_POOL   Prometheus: $PROM_URL   Dask: $DASK_ADDRESS
# e.g. nasops refresh --runner dask --dask-address $DASK_ADDRESS ; nasops replay --url $GATEWAY_URL --data ...
EOF
}

case "${1:-}" in
  up) cmd_up ;;
  status) cmd_status ;;
  down) cmd_down ;;
  env) cmd_env ;;
  *) echo "usage: $0 up|status|down|env" >&2; exit 2 ;;
esac

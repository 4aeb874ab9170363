#!/usr/bin/env bash
# The grown-up embedded defaults on one machine: MLflow tracking server, Prefect server and Prometheus, all on
# 127.0.0.1, state under $NASOPS_HOME/stack. Usage: infra/local/stack.sh start|stop|status
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
home="${NASOPS_HOME:-$root/.nasops}"
state="$home/stack"
bin="${VENV:-$root/.venv}/bin"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
PREFECT_PORT="${PREFECT_PORT:-4200}"
PROM_PORT="${PROM_PORT:-9090}"
GATEWAY_TARGET="${GATEWAY_TARGET:-127.0.0.1:8000}"
mkdir -p "$state"

start_one() {  # name, command...
  local name=$1; shift
  if [ -f "$state/$name.pid" ] && kill -0 "$(cat "$state/$name.pid")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$state/$name.pid"))"; return
  fi
  setsid "$@" >"$state/$name.log" 2>&1 &
  echo $! >"$state/$name.pid"
  echo "started $name (pid $!, log $state/$name.log)"
}

case "${1:-}" in
  start)
    start_one mlflow "$bin/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" \
      --backend-store-uri "sqlite:///$state/mlflow.db" --artifacts-destination "$state/mlartifacts"
    PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_HOME="$state/prefect" \
      start_one prefect "$bin/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT"
    if command -v prometheus >/dev/null; then
      sed "s/GATEWAY_TARGET/$GATEWAY_TARGET/" "$here/prometheus-local.yml" >"$state/prometheus.yml"
      start_one prometheus prometheus --config.file="$state/prometheus.yml" \
        --storage.tsdb.path="$state/prometheus-data" --web.listen-address="127.0.0.1:$PROM_PORT"
    else
      echo "prometheus not installed (Debian: apt-get install prometheus); skipping it"
    fi
    cat <<MSG
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api
# Prometheus UI: http://127.0.0.1:$PROM_PORT (scraping the gateway at $GATEWAY_TARGET)
MSG
    ;;
  stop)
    for name in prometheus prefect mlflow; do
      if [ -f "$state/$name.pid" ]; then
        kill -- -"$(cat "$state/$name.pid")" 2>/dev/null || kill "$(cat "$state/$name.pid")" 2>/dev/null || true
        rm -f "$state/$name.pid"; echo "stopped $name"
      fi
    done
    ;;
  status)
    for name in mlflow prefect prometheus; do
      if [ -f "$state/$name.pid" ] && kill -0 "$(cat "$state/$name.pid")" 2>/dev/null; then
        echo "$name: running (pid $(cat "$state/$name.pid"))"; else echo "$name: stopped"; fi
    done
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# `make demo`: retransmon serve + a real Prometheus + lossy traffic, all on this host.
# Prometheus listens on 127.0.0.1:9090 only; traffic stays in private namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
RETRANSMON=.venv/bin/retransmon
serve_pid=""
cleanup() {
    if [[ -n "$serve_pid" ]]; then kill -TERM "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
answers() {
    .venv/bin/python -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:2112/metrics", timeout=1)' 2>/dev/null
}
if answers; then
    echo "using the retransmon serve already answering on :2112"
else
    "$RETRANSMON" serve --listen 127.0.0.1:2112 --log-level warning &
    serve_pid=$!
    for _ in $(seq 50); do
        answers && break
        kill -0 "$serve_pid" 2>/dev/null || { echo "retransmon serve did not start" >&2; exit 1; }
        sleep 0.2
    done
fi
"$RETRANSMON" chaos --prometheus --scrape 127.0.0.1:2112 --loss "${LOSS:-5}" \
    --flows "${FLOWS:-4}" --connections "${CONNECTIONS:-3000}" "$@"

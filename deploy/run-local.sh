#!/usr/bin/env bash
# `make run`: a fresh local Kafka broker, Warroom's worker, the chat endpoint and the
# compliance gate; the example rule packs and the default policy; the demo conversation,
# two drafts for the gate and sample files through the usage, POS, email and meeting
# connectors; every intervention printed as it arrives. Ctrl-C stops all of it.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
WARROOM=.venv/bin/warroom
RUN_DIR=.cache/run
BROKER_DIR=.cache/kafka/run
CHAT_PORT=${CHAT_PORT:-8080}
GATE_PORT=${GATE_PORT:-8090}
mkdir -p "$RUN_DIR"

pids=()
cleanup() {
    trap - EXIT INT TERM
    echo
    echo "stopping..."
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do  # up to 10 s for a clean shutdown, then no more waiting
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.2
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
    "$PY" deploy/kafka/broker.py stop --dir "$BROKER_DIR" >/dev/null 2>&1 || true
    echo "stopped: worker, chat endpoint, gate, tail and broker"
}
trap cleanup EXIT INT TERM

started=$SECONDS
echo "starting a local Kafka broker (KRaft, 127.0.0.1)..."
bootstrap=$("$PY" deploy/kafka/broker.py start --port "${KAFKA_PORT:-0}" --dir "$BROKER_DIR" --fresh | tail -1)
export WARROOM_BOOTSTRAP_SERVERS=$bootstrap
export WARROOM_DATA_DIR=$RUN_DIR/worker
# Admin pages (/customers, /rules) need a bearer token; this run makes one up.
WARROOM_ADMIN_TOKEN=${WARROOM_ADMIN_TOKEN:-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')}
export WARROOM_ADMIN_TOKEN
echo "broker ready at $bootstrap after $((SECONDS - started)) s"

(umask 077; printf '%s\n' "$WARROOM_ADMIN_TOKEN" >"$RUN_DIR/admin-token")
"$WARROOM" topics
for bundle in rules/examples/*.yaml rules/policies/default.yaml; do
    "$WARROOM" rules push "$bundle" >/dev/null
done
echo "pushed the example rule packs and the default compliance policy"
"$WARROOM" worker >"$RUN_DIR/worker.log" 2>&1 &
pids+=($!)
"$WARROOM" chat serve --port "$CHAT_PORT" >"$RUN_DIR/chat.log" 2>&1 &
pids+=($!)
"$WARROOM" gate serve --port "$GATE_PORT" >"$RUN_DIR/gate.log" 2>&1 &
pids+=($!)
"$WARROOM" tail interventions --from-beginning &
pids+=($!)

cat <<INFO
worker log:     $RUN_DIR/worker.log   metrics: http://127.0.0.1:6066/metrics
chat endpoint:  http://127.0.0.1:$CHAT_PORT/v1/messages   (log: $RUN_DIR/chat.log)
gate:           http://127.0.0.1:$GATE_PORT/v1/drafts     (log: $RUN_DIR/gate.log)
admin token:    in $RUN_DIR/admin-token (export WARROOM_ADMIN_TOKEN=\$(cat $RUN_DIR/admin-token) for warroom explain)
INFO
DEMO_DIR=$RUN_DIR/demo
"$WARROOM" demo --url "http://127.0.0.1:$CHAT_PORT" --gate "http://127.0.0.1:$GATE_PORT" \
    --files "$DEMO_DIR"
# Files in each connector's own format, times relative to now: each makes one example
# pack fire (trial health, refill due, unanswered quote, meeting coaching).
{
    "$WARROOM" usage read "$DEMO_DIR/usage.jsonl"
    "$WARROOM" pos read "$DEMO_DIR/pos.csv"
    "$WARROOM" email read "$DEMO_DIR/quote.eml"
    "$WARROOM" meetings read "$DEMO_DIR/discovery.vtt"
} >"$RUN_DIR/connectors.log" 2>&1
echo "demo: sample files in $DEMO_DIR fed through the usage, POS, email and meeting connectors (log: $RUN_DIR/connectors.log)"
echo "interventions appear below as the worker raises them (Ctrl-C to stop):"
wait "${pids[@]}"

#!/usr/bin/env bash
# External red-team suite: garak 0.17.1 (own venv) against a real `bot serve` over its OpenAI-compatible API.
#
#   bash bench/garak/run.sh [garak.yaml]
#
# Environment:
#   GARAK_PROMPT_CAP  prompts per probe where the probe honours garak's cap (default 20)
#   GARAK_ONLY        run only the config's probes whose names start with this (e.g. probes.encoding.)
#   GARAK_RESPONDER   a responder plugin instead of the configured one (extractive: no LLM, same guards)
#   BOT_CONFIG        a servicebot YAML (default: the packaged defaults, the real model and full guard suite)
#   GARAK_OUT         where the results go (default artifacts/garak); GARAK_PYTHON (default python3.11)
# Writes GARAK_OUT/{summary.json,report.jsonl,hitlog.jsonl,turns.db,server.log} and prints the per-probe summary.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/bench/garak"
cd "$ROOT"  # the bot config's relative paths (knowledge source, QA file) are relative to the checkout
TEMPLATE="${1:-$HERE/garak.yaml}"
VENV="$ROOT/var/garak-venv"
RUN="$ROOT/var/garak-run"
OUT="${GARAK_OUT:-$ROOT/artifacts/garak}"
CAP="${GARAK_PROMPT_CAP:-20}"
PY="$ROOT/.venv/bin/python"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

[[ -x "$ROOT/.venv/bin/bot" ]] || { echo "No project venv at $ROOT/.venv: run scripts/setup.sh first." >&2; exit 2; }
[[ -f "$TEMPLATE" ]] || { echo "No garak config at $TEMPLATE." >&2; exit 2; }
[[ "$CAP" =~ ^[1-9][0-9]*$ ]] || { echo "GARAK_PROMPT_CAP must be a positive whole number, not '$CAP'." >&2; exit 2; }

# 1. garak in its own venv (not a project dependency). CPU torch first: a bare torch pulls a multi-GB CUDA
#    build. A current pip first: pip 23's resolver backtracked for over 15 minutes on garak's pins here.
if ! "$VENV/bin/python" -c "import garak" 2>/dev/null; then
    echo "== installing garak 0.17.1 into $VENV"
    "${GARAK_PYTHON:-python3.11}" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q torch==2.13.0
    "$VENV/bin/pip" install -q garak==0.17.1
fi

# 2. bot serve on a free port with a generated key; its own data dir (the demo index is built there once)
#    and a fresh turn database per run, which the summary reads for the bot's own decision on each turn.
mkdir -p "$RUN" "$OUT"
rm -rf "$RUN/xdg" "$RUN/turns.db" "$RUN/turns.db-wal" "$RUN/turns.db-shm"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
KEY="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')"
SERVE=("$ROOT/.venv/bin/bot" serve --host 127.0.0.1 --port "$PORT")
BOT_YAML="${BOT_CONFIG:-$ROOT/bot/default.yaml}"
if [[ -n "${GARAK_RESPONDER:-}" ]]; then  # the same config with only the responder swapped
    "$PY" -c 'import sys, yaml; c = yaml.safe_load(open(sys.argv[1])); c["responder"] = sys.argv[2]; yaml.safe_dump(c, sys.stdout)' \
        "$BOT_YAML" "$GARAK_RESPONDER" >"$RUN/bot.yaml"
    BOT_YAML="$RUN/bot.yaml"
fi
SERVE+=(--config "$BOT_YAML")
echo "== starting bot serve on 127.0.0.1:$PORT (${BOT_CONFIG:-packaged defaults}${GARAK_RESPONDER:+, responder $GARAK_RESPONDER})"
# Rate limits off for this client: garak sends blocked turns back to back, faster than a customer could.
SERVICEBOT_API_KEYS="$KEY" SERVICEBOT_DATA_DIR="$RUN/data" SERVICEBOT_DATABASE_URL="sqlite:///$RUN/turns.db" \
    SERVICEBOT_SERVER__RATE_PER_IP=0 SERVICEBOT_SERVER__RATE_PER_SESSION=0 \
    nice -n 10 "${SERVE[@]}" >"$RUN/server.log" 2>&1 &
SERVER=$!
stop_server() {
    if kill -0 "$SERVER" 2>/dev/null; then
        kill -INT "$SERVER" 2>/dev/null || true   # uvicorn shuts down cleanly; pending turn writes finish
        for _ in $(seq 1 60); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.5; done
        kill "$SERVER" 2>/dev/null || true
    fi
    wait "$SERVER" 2>/dev/null || true
    cp "$RUN/server.log" "$OUT/server.log" 2>/dev/null || true
}
trap stop_server EXIT

START=$(date +%s)
until curl -sf -m 2 "http://127.0.0.1:$PORT/healthz" >/dev/null; do
    if ! kill -0 "$SERVER" 2>/dev/null; then
        echo "bot serve exited before it was healthy; its log:" >&2; tail -20 "$RUN/server.log" >&2; exit 1
    fi
    (( $(date +%s) - START < 900 )) || { echo "bot serve was not healthy within 900 s." >&2; exit 1; }
    sleep 2
done
echo "== healthy after $(( $(date +%s) - START )) s"

# 3. garak: the template with this run's uri and cap; the key only through the environment.
PREFIX="servicebot-$(date +%Y%m%d-%H%M%S)"
sed -e "s#uri: http://127.0.0.1:[0-9]*/v1/#uri: http://127.0.0.1:$PORT/v1/#" \
    -e "s#soft_probe_prompt_cap: [0-9]*#soft_probe_prompt_cap: $CAP#" "$TEMPLATE" |
    awk -v only="${GARAK_ONLY:-}" '!($1 == "-" && $2 ~ /^probes\./ && index($2, only) != 1)' >"$RUN/garak.run.yaml"
echo "== garak: $(grep -c '^ *- probes\.' "$RUN/garak.run.yaml") probes, cap $CAP prompts, report prefix $PREFIX"
GARAK_START=$(date +%s)
set +e
OPENAICOMPATIBLE_API_KEY="$KEY" XDG_DATA_HOME="$RUN/xdg/data" XDG_CACHE_HOME="$RUN/xdg/cache" \
    XDG_CONFIG_HOME="$RUN/xdg/config" \
    nice -n 10 "$VENV/bin/python" -m garak --config "$RUN/garak.run.yaml" --report_prefix "$PREFIX" \
    2>&1 | tee "$RUN/garak.log"
GARAK_RC=${PIPESTATUS[0]}
set -e
GARAK_SECONDS=$(( $(date +%s) - GARAK_START ))

# 4. stop the server (its pending turn writes finish), then summarise garak's report.
stop_server
trap - EXIT
REPORT="$RUN/xdg/data/garak/garak_runs/$PREFIX.report.jsonl"
[[ -f "$REPORT" ]] || { echo "garak wrote no report (exit $GARAK_RC); see $RUN/garak.log." >&2; exit 1; }
cp "$REPORT" "$OUT/report.jsonl"
HITLOG="${REPORT%.report.jsonl}.hitlog.jsonl"
if [[ -f "$HITLOG" ]]; then cp "$HITLOG" "$OUT/hitlog.jsonl"; else rm -f "$OUT/hitlog.jsonl"; fi
rm -f "$OUT/turns.db" "$OUT/turns.db-wal" "$OUT/turns.db-shm"
"$PY" -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))' \
    "$RUN/turns.db" "$OUT/turns.db"  # a consistent copy, whether or not the WAL was checkpointed
cp "$RUN/garak.run.yaml" "$OUT/garak.run.yaml"
"$PY" "$HERE/summarize.py" "$OUT/report.jsonl" --turns "$OUT/turns.db" --config "$OUT/garak.run.yaml" \
    --out "$OUT/summary.json" \
    --seconds "$GARAK_SECONDS" --garak-exit "$GARAK_RC"

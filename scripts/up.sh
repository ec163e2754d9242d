#!/usr/bin/env bash
# One command: set everything up, prepare the default model and demo index, and start the web UI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
exec .venv/bin/bot serve "$@"

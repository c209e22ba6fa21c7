#!/usr/bin/env bash
# The main job: set-up, then the demo camera -> zeroseg node -> overlay PNGs chain (`zeroseg run`).
# Arguments go to `zeroseg run` (see `zeroseg run --help`), e.g.
#   bash scripts/demo.sh --checkpoint /path/to/ViT-B-16.pt        offline weights
#   bash scripts/demo.sh --random-weights                          smoke test: masks mean nothing
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
exec zeroseg run "$@"

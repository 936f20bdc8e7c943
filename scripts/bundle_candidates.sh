#!/usr/bin/env bash
# Train and score bundle candidates (see scripts/bundle_candidates.py --help). On the GPU box:
#   PYTHONPATH=$PWD bash scripts/bundle_candidates.sh --real .real --out "$OUT"
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$here/bundle_candidates.py" "$@"

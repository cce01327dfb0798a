#!/usr/bin/env bash
# One-time (and idempotent) set-up: the Fashion-MNIST data from Debian where apt exists, a virtual
# environment in .venv, and onceforall with its dependencies installed into it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -d /usr/share/datasets/fashion-mnist ]] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  echo "setup: installing Debian's dataset-fashion-mnist (the embedded default dataset)"
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; } ||
    echo "setup: could not install dataset-fashion-mnist; pass data.root=DIR with the IDX files" >&2
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import onceforall, torch, torchvision, onnxruntime, pytest" 2>/dev/null ||
   [[ pyproject.toml -nt .venv/.onceforall-installed ]]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch .venv/.onceforall-installed
fi

#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine: the offline Fashion-MNIST package (when we can
# install system packages) and this project with its test extras. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")"
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
      || echo "setup: could not install dataset-fashion-mnist; jepa will look elsewhere or download it" >&2
  else
    echo "setup: not root, skipping dataset-fashion-mnist; jepa will look elsewhere or download it" >&2
  fi
fi
python -m pip install -q --disable-pip-version-check -e ".[dev]"

#!/usr/bin/env bash
# Install the Debian packages the embedded corpus is built from, when some are missing.
# Needs apt-get and root (CI and our machines have both); otherwise says what to install.
set -euo pipefail
python=${1:-python3}
missing=$("$python" -m data.build --missing-packages)
[ -z "$missing" ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "data: installing Debian packages: $missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  echo "data: the corpus needs these Debian packages: $missing" >&2
  echo "      install them (sudo apt-get install $missing) and run make data again" >&2
  exit 1
fi

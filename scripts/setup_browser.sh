#!/usr/bin/env bash
# Debian's chromium, which tests/test_report.py uses to render report.html (run by setup.sh --test).
# Installs it with apt-get when run as root; otherwise says in one line what to install.
set -euo pipefail
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
  command -v chromium
else
  echo "setup.sh: the HTML report test needs chromium: sudo apt-get install -y chromium" >&2
fi

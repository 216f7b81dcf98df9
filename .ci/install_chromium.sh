#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver for the web demo's browser test, when it can (root and
# apt-get). The test drives these system executables; nothing downloads a browser at test time.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  echo "install_chromium: $(chromium --version 2>/dev/null | head -n 1) already installed"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install_chromium: not root or no apt-get; install chromium and chromium-driver yourself" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "install_chromium: $(chromium --version 2>/dev/null | head -n 1)"

#!/usr/bin/env bash
# promtool for `make validate-deploy`: Debian's prometheus package, installed once.
# Fails, with the reason, when it is missing and cannot be installed.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "promtool: expected on PATH or apt-get to install Debian's prometheus package; found neither" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "promtool: not on PATH, and installing Debian's prometheus package needs root (run: sudo apt-get install prometheus)" >&2
    exit 1
fi
echo "installing promtool (Debian package prometheus)..."
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; } >/tmp/warroom-promtool-install.log 2>&1; then
    echo "promtool: apt-get install prometheus failed; last lines of /tmp/warroom-promtool-install.log:" >&2
    tail -n 20 /tmp/warroom-promtool-install.log >&2
    exit 1
fi
command -v promtool >/dev/null 2>&1 || {
    echo "promtool: Debian's prometheus package installed, yet no promtool on PATH" >&2
    exit 1
}
promtool --version | head -n 1

#!/usr/bin/env bash
# Makes sure the tools recon's tests and demo use are installed: BART
# (Debian package bart). Installs them with apt-get when running as root;
# otherwise says what to run.
set -euo pipefail
missing=()
command -v bart >/dev/null 2>&1 || missing+=(bart)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "missing: ${missing[*]}. Install with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

#!/usr/bin/env bash
# Makes sure the tools recon's tests and demo use are installed, with apt-get
# when running as root (otherwise it says what to run):
#   scripts/ensure-deps.sh demo   BART (Debian package bart), for the demo
#   scripts/ensure-deps.sh all    BART, and Jupyter with pydicom for Debian's
#                                 python3 to run the example notebook
#                                 (jupyter-nbconvert, python3-ipykernel,
#                                 python3-pydicom), dciodvfy (Debian
#                                 package dicom3tools), which checks the
#                                 DICOM images, and what the Python
#                                 client needs to be built and tested
#                                 (python3-cryptography, python3-pytest,
#                                 python3-pip, python3-setuptools), for the
#                                 test suite
set -euo pipefail
what=${1:-all}
missing=()
command -v bart >/dev/null 2>&1 || missing+=(bart)
if [ "$what" = all ]; then
  command -v jupyter-nbconvert >/dev/null 2>&1 || missing+=(jupyter-nbconvert)
  has_py() { /usr/bin/python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('$1') is None)" >/dev/null 2>&1; }
  has_py ipykernel || missing+=(python3-ipykernel)
  has_py pydicom || missing+=(python3-pydicom)
  command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)
  has_py cryptography || missing+=(python3-cryptography)
  has_py pytest || missing+=(python3-pytest)
  has_py pip || missing+=(python3-pip)
  has_py setuptools || missing+=(python3-setuptools)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "missing: ${missing[*]}. Install with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

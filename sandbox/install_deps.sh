#!/bin/sh
# Install the sandbox image's packages (run by Dockerfile.sandbox during the build, as root).
# - everything already there (the debootstrapped lllm base): install nothing, need no network;
# - python3 is Debian's own (/usr/bin/python3): Debian's python3-* packages (pip too, and pytest for
#   `lllm test`), no recommends;
# - otherwise (python:3.12-slim and friends, python in /usr/local): tini from apt, the rest from pip.
# Then refuse an image that carries a compiler, sudo or a docker client.
set -eu
PKGS_PY="ipykernel numpy pandas matplotlib pytest"
have_all() {
    python3 -c "import ipykernel, numpy, pandas, matplotlib, matplotlib_inline, pytest" 2>/dev/null && [ -x /usr/bin/tini ] \
        && python3 -m pip --version >/dev/null 2>&1
}
if have_all; then
    echo "install_deps: everything is already installed"
elif [ "$(command -v python3)" = "/usr/bin/python3" ]; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends \
        python3-ipykernel python3-numpy python3-pandas python3-matplotlib python3-pip python3-pytest tini
    apt-get clean && rm -rf /var/lib/apt/lists/*
else
    apt-get update -q
    apt-get install -y -q --no-install-recommends tini
    apt-get clean && rm -rf /var/lib/apt/lists/*
    python3 -m pip install --no-cache-dir $PKGS_PY
fi
have_all || { echo "install_deps: packages still missing after install" >&2; exit 1; }
# dill: sb.save() pickles the kernel's variables with it (functions keep their globals, unlike cloudpickle).
if ! python3 -c "import dill" 2>/dev/null; then
    if [ "$(command -v python3)" = "/usr/bin/python3" ]; then
        apt-get update -q
        apt-get install -y -q --no-install-recommends python3-dill
        apt-get clean && rm -rf /var/lib/apt/lists/*
    else
        python3 -m pip install --no-cache-dir dill
    fi
    python3 -c "import dill" || { echo "install_deps: dill still missing after install" >&2; exit 1; }
fi
# Debian's python3-numpy drags in python3-dev and with it gcc; the sandbox must carry no compiler.
# Purge them (their dependants stay: numpy does not need a compiler to run).
if command -v dpkg >/dev/null 2>&1; then
    DEV=$(dpkg-query -W -f '${Package} ${Status}\n' 2>/dev/null | awk '$NF == "installed" {print $1}' \
        | grep -E '^(gcc(-[0-9]+)?|g\+\+(-[0-9]+)?|cpp(-[0-9]+)?|clang.*|binutils.*|make|libgcc-[0-9]+-dev|libstdc\+\+-[0-9]+-dev|libc6-dev|linux-libc-dev|libc-dev-bin|libpython3.*-dev|python3.*-dev|libexpat1-dev|zlib1g-dev|libcrypt-dev|libnsl-dev|libtirpc-dev|rpcsvc-proto|sudo)(:.*)?$' || true)
    if [ -n "$DEV" ]; then
        echo "install_deps: purging" $DEV
        dpkg --purge --force-depends $DEV >/dev/null 2>&1
    fi
fi
for tool in gcc cc c++ g++ clang sudo su docker; do
    if command -v "$tool" >/dev/null 2>&1 && [ "$tool" != "su" ]; then
        echo "install_deps: refusing an image with $tool in it" >&2
        exit 1
    fi
done
# su ships with Debian's login package; without setuid it grants nothing under no-new-privileges,
# but strip the bit anyway so no binary in the image can raise privileges.
find / -xdev -perm /6000 -type f -exec chmod ug-s {} + 2>/dev/null || true

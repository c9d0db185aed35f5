"""Make `pip install` in a sandbox say how to get packages, at once, instead of failing slowly and obscurely.

Installed into the image's site-packages with a one-line `lllm_pip_hint.pth`, so every Python process in the
container imports it at start-up; for anything that is not pip (the kernel, the file helpers) it costs one look
at `sys.orig_argv` and returns.

The sandbox has no network. `/etc/pip.conf` points pip at a closed port on the container's loopback with no
retries, so a pip that gets past this module still fails in well under a second. This module is what makes
the failure readable:
- packages off (`LLLM_PACKAGES` unset): `pip install|download|wheel|index ...` prints how to get packages
  and exits with status 1 before pip starts. `--no-index`, and requirements that are all local files (a
  wheel uploaded to the workspace), are let through.
- packages through the host (`LLLM_PACKAGES=index`, see `lllm_pkgforward.py`): pip runs; if it fails, a
  footer says where it looked and what to do (a name the index does not have, for instance).
Kernel code can bypass all of this (it is the sandbox's own user); it is a message, not a control: the control
is the missing network and, with packages on, the host's relay.
"""

from __future__ import annotations

import os
import re
import sys

_FETCHING = {"install", "download", "wheel", "index"}
_PIP_VALUE_OPTIONS = {"-c", "--constraint", "-t", "--target", "--platform", "--python-version", "--implementation",
                      "--abi", "--root", "--prefix", "--src", "-i", "--index-url", "--extra-index-url", "-f",
                      "--find-links", "--upgrade-strategy", "--global-option", "--install-option",
                      "--config-settings", "-C", "--report", "--progress-bar", "--log", "--proxy", "--retries",
                      "--timeout", "--exists-action", "--trusted-host", "--cert", "--client-cert", "--cache-dir",
                      "-d", "--dest", "-w", "--wheel-dir", "--no-binary", "--only-binary", "--root-user-action"}
_LOCAL_SUFFIXES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2")
_VALUE_OPTIONS = {"-W", "-X", "-Q"}  # interpreter options followed by a value
_PIP_SCRIPT = re.compile(r"pip(3(\.\d+)?)?")

OFF_MESSAGE = """\
lllm sandbox: pip cannot download packages here: this sandbox has no network and no package index.
To use a package that the image lacks:
  - build it into the image: `lllm sandbox build --pip PACKAGE` (or --requirements FILE) prints an image
    to give as DockerSandbox(image=...), or write `sandbox: {packages: [PACKAGE, ...]}` in the agent config;
  - or start the sandbox with packages="index" (config: `sandbox: {packages: index}`): pip then reaches
    your package index through the host, and nothing else.
"""

FAILED_FOOTER = """\
lllm sandbox: pip looked for packages on {index} (through the host; the sandbox has no other network).
A package it does not have cannot come from anywhere else: check the name and version there, or build it
into the image on the host (`lllm sandbox build --pip PACKAGE`), or upload a wheel and
`pip install --no-index ./FILE.whl`.
"""


def pip_arguments(argv: list[str]) -> list[str] | None:
    """The arguments pip gets when `argv` (an interpreter command line) runs pip, else None."""
    args = argv[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-m":
            return args[i + 2:] if i + 1 < len(args) and args[i + 1] == "pip" else None
        if arg == "-c" or arg == "-":
            return None
        if arg in _VALUE_OPTIONS:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return args[i + 1:] if _PIP_SCRIPT.fullmatch(os.path.basename(arg)) else None
    return None


def subcommand(pip_args: list[str]) -> str | None:
    """pip's subcommand (`install`, ...) among its arguments (options before it are skipped)."""
    for arg in pip_args:
        if not arg.startswith("-"):
            return arg
    return None


def needs_index(pip_args: list[str]) -> bool:
    """False when every requirement is a local file or folder (a wheel uploaded to the workspace: pip needs no
    index for it unless it has dependencies, and then it fails at once anyway)."""
    if "--no-index" in pip_args:
        return False
    seen_command = False
    i = 0
    while i < len(pip_args):
        arg = pip_args[i]
        i += 1
        if arg in ("-r", "--requirement"):
            return True  # a requirements file names packages
        if arg in ("-e", "--editable"):
            i += 1
            continue
        if arg in _PIP_VALUE_OPTIONS:
            i += 1
            continue
        if arg.startswith("-"):
            continue
        if not seen_command:
            seen_command = True
            continue
        if not (os.sep in arg or arg.endswith(_LOCAL_SUFFIXES) or os.path.exists(arg)):
            return True
    return False


def _footer_on_failure(index: str) -> None:
    real_exit = sys.exit

    def exit_with_footer(status: object = None) -> None:
        if status not in (None, 0):
            sys.stderr.write(FAILED_FOOTER.format(index=index))
        real_exit(status)

    sys.exit = exit_with_footer


def check(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> None:
    pip_args = pip_arguments(argv)
    if pip_args is None or subcommand(pip_args) not in _FETCHING:
        return
    if environ.get("LLLM_PACKAGES") == "index":
        _footer_on_failure(environ.get("LLLM_PACKAGE_INDEX_NAME") or "the host's package index")
        return
    if not needs_index(pip_args):
        return
    sys.stderr.write(OFF_MESSAGE)
    sys.stderr.flush()
    os._exit(1)


try:
    check(list(getattr(sys, "orig_argv", sys.argv)), os.environ)
except Exception:  # noqa: BLE001 - a hint must never stop an interpreter from starting
    pass

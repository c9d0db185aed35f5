"""Sandbox images with extra packages, built without giving any container the network.

`derived_image(["scipy==1.13.1", "rich"])` (or `lllm sandbox build --pip scipy rich`, or `sandbox: {packages:
[...]}` in a config) returns `lllm-sandbox:pkgs-<hash>`, an image `FROM` the sandbox image with those
packages installed:

1. The base image tells what it runs (a container with no network, started once per build): its Python version
   and platform tags, and the distributions it already has.
2. The wheels are fetched **on the host**, with the host's pip and so its configuration (index, proxy,
   certificates: `pip config`, `PIP_*`): `pip download --only-binary=:all:` for the image's Python and
   platforms, constrained to the versions the image already has (so adding a package does not replace the
   image's numpy under its pandas), except for packages you name yourself. Inside a container, https to an
   index may not work at all (a machine that trusts its index through a CA bundle of its own), and the
   sandbox has no compiler, hence wheels only.
3. `docker build` installs them with `pip install --no-index --find-links` in a first stage and copies
   `/usr/local` (where they went) into the final one, so the wheels themselves stay out of the image.

Cached by content: the tag hashes the base image's id and the requirements, so the same list on the same base
costs one `docker image inspect`. A requirement the index does not have fails on the host, with pip's own
words and the index that was asked.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable

from lllm.errors import SandboxStartError, UsageError
from lllm.sandbox import _docker

__all__ = ["derived_image", "derived_name", "read_requirements"]

RECIPE_VERSION = "1"
"""Part of the content hash: a change to how derived images are built makes new tags."""

DOCKERFILE = """\
# Built by lllm (lllm/sandbox/derived.py): the sandbox image plus packages whose wheels the host fetched.
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS install
USER root
COPY wheels/ /tmp/lllm-wheels/
COPY requirements.txt /tmp/lllm-requirements.txt
RUN python3 -m pip install --no-index --find-links /tmp/lllm-wheels --break-system-packages --no-cache-dir \\
        --root-user-action=ignore --disable-pip-version-check -r /tmp/lllm-requirements.txt

FROM ${BASE_IMAGE}
COPY --from=install /usr/local /usr/local
"""

_PROBE = r"""
import importlib.metadata as md, json, sys
from pip._vendor.packaging import tags
platforms, abis = [], []
for tag in tags.sys_tags():
    if tag.platform not in platforms:
        platforms.append(tag.platform)
    if tag.abi not in abis:
        abis.append(tag.abi)
dists = {}
for dist in md.distributions():
    name = dist.metadata["Name"]
    if name:
        dists[name] = dist.version
print(json.dumps({"python": "%d.%d" % sys.version_info[:2], "implementation": tags.interpreter_name(),
                  "platforms": platforms, "abis": abis, "dists": dists}))
"""
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_PLAIN_VERSION = re.compile(r"\d+(\.\d+)*([a-z]+\d*)?(\.post\d+)?(\.dev\d+)?")


def read_requirements(packages: Iterable[str] = (), requirements_file: str | Path | None = None) -> list[str]:
    """The requirement lines of `packages` and of a requirements file, without comments and blank lines.

    Raises:
        UsageError: nothing is required, the file cannot be read, or a line is an option pip would take from
            a requirements file but that makes no sense here (`-e`, editable installs).
    """
    lines = [p.strip() for p in packages if p and p.strip()]
    if requirements_file is not None:
        try:
            text = Path(requirements_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the requirements file {str(requirements_file)!r}: {exc}") from None
        for raw in text.splitlines():
            line = raw.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    if not lines:
        raise UsageError("no packages: give package names (--pip NAME ...) or a requirements file")
    for line in lines:
        if line.startswith(("-e", "--editable")):
            raise UsageError(f"{line!r}: editable installs cannot go into an image; build a wheel and name it")
    return lines


def derived_name(base_id: str, requirements: list[str]) -> str:
    """`lllm-sandbox:pkgs-<hash>` of a base image id and requirement lines (the order of lines does not count)."""
    digest = hashlib.sha256("\0".join([RECIPE_VERSION, base_id, *sorted(requirements)]).encode()).hexdigest()
    return f"lllm-sandbox:pkgs-{digest[:12]}"


def derived_image(packages: Iterable[str] = (), *, requirements_file: str | Path | None = None,
                  base: str | None = None, tag: str | None = None, rebuild: bool = False,
                  log: Callable[[str], None] | None = None) -> str:
    """The sandbox image with `packages` (requirement strings) installed, built when missing (see the module
    docstring). Returns `tag` when one is given (the image is tagged with it too), else the content name.

    Args:
        packages: requirements as pip takes them (`"scipy"`, `"rich>=13"`).
        requirements_file: a requirements.txt, read in addition.
        base: the image to build on (default: the sandbox image, `ensure_image()`); it must be a sandbox image.
        tag: a name of your own for the result (`myimage:1`).
        rebuild: build even when the content name exists.
        log: receives progress lines.

    Raises:
        UsageError: no packages, or an unreadable requirements file.
        SandboxStartError: the host's pip could not fetch a wheel (the message has pip's error and the index),
            or the image build failed.
    """
    from lllm.sandbox.image import build_lock, check_guest, ensure_image, image_exists

    say = log or (lambda line: None)
    requirements = read_requirements(packages, requirements_file)
    base = base or ensure_image(log=say)
    check_guest(base)
    with _docker.translate_errors(f"inspect image {base!r}"):
        base_id = _docker.client().images.get(base).id
    name = derived_name(base_id, requirements)
    if rebuild or not image_exists(name):
        with build_lock():
            if rebuild or not image_exists(name):
                _build(name, base, requirements, say)
    if tag:
        repo, _, version = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
        with _docker.translate_errors(f"tag {name!r} as {tag!r}"):
            _docker.client().images.get(name).tag(repo, version or "latest")
        return tag if ":" in tag.rsplit("/", 1)[-1] else f"{tag}:latest"
    return name


def probe(image: str) -> dict[str, Any]:
    """What the image runs: Python version, implementation, platform and ABI tags, installed distributions."""
    with _docker.translate_errors(f"look inside image {image!r}"):
        out = _docker.client().containers.run(image, ["python3", "-I", "-c", _PROBE],
                                              network_mode="none", remove=True, user="1000:1000",
                                              stdout=True, stderr=False)
    try:
        info = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SandboxStartError(f"could not tell which Python the image {image!r} runs (its pip is missing?); "
                                "a sandbox image built by lllm has pip", image=image) from None
    return dict(info)


def _constraints(info: dict[str, Any], requirements: list[str]) -> list[str]:
    """`name==version` for what the image has, except the projects the requirements name themselves."""
    named = set()
    for line in requirements:
        match = _NAME.match(line)
        if match:
            named.add(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    out = []
    for dist, version in sorted(info.get("dists", {}).items()):
        key = re.sub(r"[-_.]+", "-", dist).lower()
        if key not in named and _PLAIN_VERSION.fullmatch(str(version)):
            out.append(f"{dist}=={version}")
    return out


def fetch_wheels(requirements: list[str], dest: Path, info: dict[str, Any], say: Callable[[str], None]) -> None:
    """`pip download` on the host, for the image's Python and platforms (see the module docstring).

    Raises:
        SandboxStartError: pip failed (its last lines and the index it used are in the message).
    """
    dest.mkdir(parents=True, exist_ok=True)
    req = dest.parent / "requirements.txt"
    req.write_text("\n".join(requirements) + "\n", encoding="utf-8")
    cons = dest.parent / "constraints.txt"
    cons.write_text("\n".join(_constraints(info, requirements)) + "\n", encoding="utf-8")
    py = str(info["python"])
    cmd = [sys.executable, "-m", "pip", "download", "--dest", str(dest), "--only-binary=:all:",
           "--python-version", py, "--implementation", str(info.get("implementation") or "cp"),
           "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "-r", str(req), "-c", str(cons)]
    for abi in info.get("abis") or [f"cp{py.replace('.', '')}", "abi3", "none"]:
        cmd += ["--abi", str(abi)]
    for platform in info.get("platforms") or []:
        cmd += ["--platform", str(platform)]
    say(f"fetching wheels on the host: pip download {' '.join(requirements)} (Python {py})")
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"})
    for line in proc.stdout.splitlines():
        if line.strip():
            say(line.rstrip())
    if proc.returncode != 0:
        from lllm.sandbox.package_relay import host_index

        try:
            where = f"{host_index().display} ({host_index().source})"
        except UsageError as exc:
            where = str(exc)
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
        raise SandboxStartError(
            f"the host's pip could not fetch {', '.join(requirements)} for the sandbox (Python {py}, wheels only: "
            f"the sandbox has no compiler). Index: {where}. Check the names and versions there; a project that "
            f"has no wheel needs one built first (`pip wheel PROJECT`, then serve it from your index or a "
            f"--find-links folder in your pip configuration). pip said:\n{tail}", packages=requirements)


def _build(name: str, base: str, requirements: list[str], say: Callable[[str], None]) -> None:
    info = probe(base)
    with tempfile.TemporaryDirectory(prefix="lllm-derived-") as tmp:
        context = Path(tmp)
        fetch_wheels(requirements, context / "wheels", info, say)
        (context / "Dockerfile").write_text(DOCKERFILE, encoding="utf-8")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for path in sorted(context.rglob("*")):
                info_ = tar.gettarinfo(str(path), path.relative_to(context).as_posix())
                info_.uid = info_.gid = 0
                info_.uname = info_.gname = "root"
                if path.is_file():
                    with open(path, "rb") as fh:
                        tar.addfile(info_, fh)
                else:
                    tar.addfile(info_)
        buf.seek(0)
        say(f"building {name} from {base}")
        tail: list[str] = []
        api = _docker.client().api
        with _docker.translate_errors(f"build the image {name!r}"):
            for chunk in api.build(fileobj=buf, custom_context=True, dockerfile="Dockerfile", tag=name,
                                   buildargs={"BASE_IMAGE": base}, rm=True, forcerm=True, decode=True,
                                   network_mode="none",
                                   labels={"lllm.packages": json.dumps(requirements)[:4000], "lllm.base": base}):
                line = str(chunk.get("stream") or chunk.get("status") or "").rstrip()
                if line:
                    tail = (tail + [line])[-30:]
                    say(line)
                if "error" in chunk:
                    raise SandboxStartError(f"building {name!r} from {base!r} failed: {chunk['error'].strip()}\n"
                                            + "\n".join(tail), image=name)

"""The sandbox image: its content-hashed name, and `ensure_image()`, which builds base and image when missing.

The image is tagged `lllm-sandbox:<hash>` where the hash covers `Dockerfile.sandbox` and every file in
`sandbox/`, so a change to the guest code means a new tag and a rebuild, and an unchanged tree costs one
`docker image inspect` (a few milliseconds). The base image is, in order: `base_image=` /
`$LLLM_SANDBOX_BASE_IMAGE`; a local `lllm/sandbox-base:bookworm`; a local `python:3.12-slim`; a pulled
`python:3.12-slim`; and, where no registry answers, one built with `sandbox/build_base.sh` (debootstrap +
`docker import`, root only, about two minutes). `$LLLM_SANDBOX_IMAGE` names a prebuilt image to use as is.

`lllm-sandbox:latest` (`LATEST`) is a stable tag on the newest image built or checked by `lllm sandbox build`,
for Dockerfiles of your own (`FROM lllm-sandbox:latest`). `check_guest(image)` refuses an image that does not
carry lllm's guest code (the `lllm.guest` label that Dockerfile.sandbox sets, inherited by images built on it).
Images with extra packages are built by `lllm.sandbox.derived`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from lllm.errors import SandboxStartError
from lllm.sandbox import _docker

IMAGE_REPO = "lllm-sandbox"
BASE_IMAGE = "lllm/sandbox-base:bookworm"
PUBLIC_BASE = "python:3.12-slim"
LATEST = f"{IMAGE_REPO}:latest"
GUEST_LABEL = "lllm.guest"
"""Set by Dockerfile.sandbox (and so on every image built FROM it): the image has lllm's guest code."""
_build_lock = threading.Lock()
_guest_checked: set[tuple[str, Any]] = set()


PACKAGED_SOURCE = Path(__file__).resolve().parent / "image_source"
"""Where a wheel keeps its copy of `Dockerfile.sandbox` and `sandbox/` (put there by setup.py)."""


def _is_source(root: Path) -> bool:
    return (root / "Dockerfile.sandbox").is_file() and (root / "sandbox").is_dir()


def source_root() -> Path:
    """The folder holding `Dockerfile.sandbox` and `sandbox/`: `$LLLM_SOURCE_ROOT`, else the checkout this
    package runs from, else the copy an installed wheel carries."""
    given = os.environ.get("LLLM_SOURCE_ROOT")
    candidates = [Path(given)] if given else [Path(__file__).resolve().parents[2], PACKAGED_SOURCE]
    for root in candidates:
        if _is_source(root):
            return root
    raise SandboxStartError(f"no Dockerfile.sandbox and sandbox/ under {str(candidates[0])!r}: building the sandbox "
                            "image needs them (a source checkout of lllm, or a wheel built from one); set "
                            "LLLM_SANDBOX_IMAGE to a built image, or LLLM_SOURCE_ROOT to the checkout",
                            root=str(candidates[0]))


def _context_files(root: Path) -> list[tuple[str, Path]]:
    found = [("Dockerfile.sandbox", root / "Dockerfile.sandbox")]
    for path in sorted((root / "sandbox").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            found.append((path.relative_to(root).as_posix(), path))
    return found


def content_hash(root: Path | None = None) -> str:
    """sha256 over the names and contents of Dockerfile.sandbox and sandbox/*."""
    digest = hashlib.sha256()
    for name, path in _context_files(root or source_root()):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def image_name() -> str:
    """The image `DockerSandbox` uses: `$LLLM_SANDBOX_IMAGE`, else `lllm-sandbox:<content hash[:12]>`."""
    return os.environ.get("LLLM_SANDBOX_IMAGE") or f"{IMAGE_REPO}:{content_hash()[:12]}"


def image_exists(name: str) -> bool:
    import docker.errors

    with _docker.translate_errors(f"inspect image {name!r}"):
        try:
            _docker.client().images.get(name)
        except docker.errors.ImageNotFound:
            return False
    return True


def ensure_image(*, base_image: str | None = None, rebuild: bool = False,
                 log: Callable[[str], None] | None = None) -> str:
    """Return the sandbox image's name, building it (and its base, if needed) when it is missing.

    Args:
        base_image: the `FROM` image; default: see the module docstring.
        rebuild: build even when the image exists.
        log: receives build progress lines (default: dropped).

    Raises:
        SandboxStartError: no image and it cannot be built (the message says why and what to do).
    """
    name = image_name()
    if not rebuild and image_exists(name):
        return name
    if os.environ.get("LLLM_SANDBOX_IMAGE"):
        raise SandboxStartError(f"LLLM_SANDBOX_IMAGE={name!r} does not exist on the Docker engine; build it or "
                                "unset the variable so lllm builds its own", image=name)
    say = log or (lambda line: None)
    root = source_root()
    with build_lock():
        if not rebuild and image_exists(name):
            return name
        base = resolve_base(base_image, say)
        say(f"building {name} from {base}")
        _build(root, name, base, say)
    tag_latest(name)
    return name


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """Held while an image is built: by this process's threads and, through a file lock in the run root (a
    folder only this user controls, checked there), by other processes of this user."""
    from lllm.sandbox._rundir import run_root

    lock_file = run_root() / ".image-build.lock"
    with _build_lock, open(os.open(lock_file, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def tag_latest(name: str) -> None:
    """Point `lllm-sandbox:latest` at the image `name` (the sandbox image this checkout builds)."""
    with _docker.translate_errors(f"tag {name!r} as {LATEST!r}"):
        _docker.client().images.get(name).tag(IMAGE_REPO, "latest")


def check_guest(image: str, engine: Any = None) -> None:
    """Refuse an image without lllm's guest code (no `lllm.guest` label); remembered per image for this process.

    Raises:
        SandboxStartError: the image is missing, or it has no guest code (the message says how to make one).
    """
    if (image, engine) in _guest_checked:
        return
    import docker.errors

    with _docker.translate_errors(f"inspect image {image!r}", engine=engine):
        try:
            labels = _docker.client(engine).images.get(image).labels or {}
        except docker.errors.ImageNotFound:
            if engine is not None and not _docker.is_local(_docker.client(engine)):
                raise SandboxStartError(
                    f"the sandbox image {image!r} is not on the Docker engine at {engine.describe()}; load it there "
                    f"from this machine with `docker save {image} | docker {engine.cli_flags()} load` (build it "
                    "here first with `lllm sandbox build`)", image=image) from None
            raise SandboxStartError(f"the sandbox image {image!r} does not exist on the Docker engine; build it (for "
                                    "extra packages: `lllm sandbox build --pip PACKAGE`) or fix the name",
                                    image=image) from None
    if GUEST_LABEL not in labels:
        raise SandboxStartError(
            f"the image {image!r} has no lllm guest code (it lacks the label {GUEST_LABEL!r} that lllm's "
            "Dockerfile.sandbox sets): a sandbox runs lllm's kernel supervisor inside the container. Build your "
            f"image FROM {LATEST} (`lllm sandbox build` makes that tag), or let lllm add packages to its own "
            "image with `lllm sandbox build --pip PACKAGE` or `sandbox: {packages: [...]}`.", image=image)
    _guest_checked.add((image, engine))


def resolve_base(base_image: str | None, say: Callable[[str], None]) -> str:
    """Pick (and if needed build) the base image; see the module docstring for the order."""
    explicit = base_image or os.environ.get("LLLM_SANDBOX_BASE_IMAGE")
    if explicit:
        return explicit
    for candidate in (BASE_IMAGE, PUBLIC_BASE):
        if image_exists(candidate):
            return candidate
    try:
        say(f"pulling {PUBLIC_BASE}")
        with _docker.translate_errors(f"pull {PUBLIC_BASE}"):
            _docker.client().images.pull(PUBLIC_BASE)
        return PUBLIC_BASE
    except Exception as exc:  # noqa: BLE001 - no registry: fall back to debootstrap
        say(f"cannot pull {PUBLIC_BASE} ({exc}); building {BASE_IMAGE} with debootstrap")
    return build_base(say=say)


def build_base(*, say: Callable[[str], None] | None = None, force: bool = False) -> str:
    """Run `sandbox/build_base.sh` (debootstrap + docker import); idempotent. Returns the base's name.

    Raises:
        SandboxStartError: the script failed (not root, no debootstrap, no mirror): the message has its log.
    """
    script = source_root() / "sandbox" / "build_base.sh"
    env = dict(os.environ, LLLM_FORCE_BASE="1" if force else "0")
    proc = subprocess.Popen(["sh", str(script), BASE_IMAGE], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-30:]
        if say:
            say(line.rstrip())
    if proc.wait() != 0:
        raise SandboxStartError(f"building the base image with {str(script)!r} failed (exit {proc.returncode}); "
                                "it needs root, debootstrap and the Debian mirror. Last lines:\n" + "\n".join(tail))
    return BASE_IMAGE


def _build(root: Path, name: str, base: str, say: Callable[[str], None]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for arcname, path in _context_files(root):
            info = tar.gettarinfo(str(path), arcname)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    buf.seek(0)
    api = _docker.client().api
    tail: list[str] = []
    with _docker.translate_errors(f"build the sandbox image {name!r}"):
        for chunk in api.build(fileobj=buf, custom_context=True, dockerfile="Dockerfile.sandbox", tag=name,
                               buildargs={"BASE_IMAGE": base}, rm=True, forcerm=True, decode=True,
                               labels={"lllm.image_hash": name.rsplit(":", 1)[-1]}):
            line = str(chunk.get("stream") or chunk.get("status") or "").rstrip()
            if line:
                tail = (tail + [line])[-30:]
                say(line)
            if "error" in chunk:
                raise SandboxStartError(f"building the sandbox image {name!r} from {base!r} failed: "
                                        f"{chunk['error'].strip()}\n" + "\n".join(tail), image=name)

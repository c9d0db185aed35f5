"""Shipping a tactic's packages to a Ray cluster: what goes, the check before anything is sent, the upload, and
loading them again on the other side.

The packages loaded in the tactic's runtime (its lllm.toml package and those it depends on) are laid side by side
in a staging folder (`p0`, `p1`, ...: links to their folders) with `lllm-shipment.json`, which says where each
came from, and uploaded with Ray's own packaging as the batch's `working_dir`. Every worker and the hub start in
the unpacked copy and load the packages from it with `Runtime.load_package(..., origins=...)`: their modules get
the names they have on the driver, so a task, a result or an exception of a class of the package unpickles on
either side.

What Ray leaves out is left out of the check too: `.gitignore` and `.rayignore` patterns, Ray's default excludes
(`.git`, `.venv`, `__pycache__`) and the executor's `excludes`. The check reads every file that would go (an
unreadable one is named) and adds up their sizes against the limit (Ray's: the largest message its control store
takes) before anything is uploaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lllm.errors import PackageShipError

__all__ = ["MANIFEST", "Shipment", "check_shipment", "load_shipment", "plan_shipment", "upload_shipment"]

MANIFEST = "lllm-shipment.json"
EXTRA_EXCLUDES = ["*.pyc", ".mypy_cache", ".pytest_cache", "node_modules"]
"""Left out besides Ray's defaults: caches nothing on a worker needs."""

_LOADED: set[str] = set()
"""Shipments already loaded in this (worker or hub) process, by id."""


@dataclass
class Shipment:
    """The packages of one batch, staged for upload."""

    manifest: dict[str, Any]
    """`{"id", "runtime", "packages": [{"dir", "origin", "root", "name"}]}` (also `lllm-shipment.json`)."""
    staging: Path
    """The staging folder (removed by `discard`)."""
    files: int = 0
    size: int = 0
    """Bytes of the files that go, before compression (set by `check_shipment`)."""
    uri: str | None = None
    """Where Ray keeps it once uploaded (`gcs://_ray_pkg_....zip`)."""

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def plan_shipment(runtime: Any) -> Shipment | None:
    """Stage the packages loaded in `runtime` (None when it has none: the tactic is defined in code)."""
    packages = list(getattr(runtime, "packages", {}).values())
    if not packages:
        return None
    dependencies = {dep for info in packages for dep in info.dependencies}
    staging = Path(tempfile.mkdtemp(prefix="lllm-ship-"))
    entries = []
    digest = hashlib.sha256()
    for n, info in enumerate(packages):
        name = f"p{n}"
        os.symlink(info.root, staging / name, target_is_directory=True)
        origin = info.toml_path if info.origin is None else info.origin / info.toml_path.name
        entries.append({"dir": name, "origin": str(origin), "root": info.toml_path not in dependencies,
                        "name": info.name})
        digest.update(str(origin).encode())
    manifest = {"id": digest.hexdigest()[:16], "runtime": runtime.name, "packages": entries}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return Shipment(manifest=manifest, staging=staging)


def _excludes(extra: list[str]) -> list[str]:
    from ray._private import ray_constants

    return [*ray_constants.get_runtime_env_default_excludes(), *EXTRA_EXCLUDES, *extra]


def check_shipment(shipment: Shipment, *, excludes: list[str], limit: int | None = None) -> None:
    """Read every file that would be shipped, as Ray selects them; raise PackageShipError for one that cannot
    be read or when they add up to more than `limit` bytes (default: Ray's upload limit)."""
    from ray._private.runtime_env import packaging

    limit = packaging.GCS_STORAGE_MAX_SIZE if limit is None else limit
    sizes: dict[str, int] = {}
    files = 0
    owner = {e["dir"]: e for e in shipment.manifest["packages"]}

    def package_of(path: Path) -> dict[str, Any]:
        return owner[path.relative_to(shipment.staging).parts[0]]

    def visit(path: Path) -> None:
        nonlocal files
        if path.is_dir() or path == shipment.staging / MANIFEST:
            return
        entry = package_of(path)
        real = Path(entry["origin"]).parent / path.relative_to(shipment.staging / entry["dir"])
        try:
            with open(path, "rb") as f:  # a file Ray could not read fails the upload, not only this check
                f.read(1)
            size = path.stat().st_size
        except OSError as exc:
            raise PackageShipError(
                f"package {entry['name']!r} cannot be shipped to the Ray cluster: {str(real)!r} cannot be read "
                f"({exc.strerror or exc}). Make it readable, or leave it out with a .rayignore file in the "
                "package (or RayExecutor(excludes=[...])).", path=str(real), package=entry["name"]) from None
        files += 1
        sizes[entry["name"]] = sizes.get(entry["name"], 0) + size

    packaging._dir_travel(shipment.staging, [packaging._get_excludes(shipment.staging, _excludes(excludes))],
                          visit, include_gitignore=True)
    shipment.files, shipment.size = files, sum(sizes.values())
    if shipment.size > limit:
        biggest = max(sizes, key=lambda k: sizes[k])
        raise PackageShipError(
            f"the packages of this batch are {shipment.size / 2**20:.1f} MiB in {files} files (package "
            f"{biggest!r}: {sizes[biggest] / 2**20:.1f} MiB), over the {limit / 2**20:.1f} MiB Ray ships to its "
            "workers. Leave data out of the package with a .rayignore (or .gitignore) file in it, or "
            "RayExecutor(excludes=['data/']), and read it from shared storage instead.",
            size=shipment.size, limit=limit, package=biggest)


def upload_shipment(shipment: Shipment, *, excludes: list[str]) -> str:
    """Upload the staged packages to the cluster (Ray's packaging: zipped, content-addressed, uploaded once);
    returns the `working_dir` URI for the batch's tasks and hub."""
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed
    from ray.exceptions import RuntimeEnvSetupError

    env = {"working_dir": str(shipment.staging), "excludes": [*EXTRA_EXCLUDES, *excludes]}
    try:
        env = upload_working_dir_if_needed(env, include_gitignore=True,
                                           scratch_dir=tempfile.gettempdir())
    except (RuntimeEnvSetupError, ValueError, OSError) as exc:
        names = ", ".join(repr(e["name"]) for e in shipment.manifest["packages"])
        raise PackageShipError(f"the packages of this batch ({names}) could not be shipped to the Ray cluster: "
                               f"{exc}", size=shipment.size) from exc
    shipment.uri = str(env["working_dir"])
    return shipment.uri


def load_shipment(manifest: dict[str, Any] | None, base: str | os.PathLike[str] | None = None) -> None:
    """On a worker or the hub: load the shipped packages (once per process) from `base` (default: the working
    directory, where Ray unpacked them), under the names they have on the driver."""
    if manifest is None or manifest["id"] in _LOADED:
        return
    from lllm.core.runtime import TOML_NAME, get_runtime

    root = Path(base or os.getcwd())
    origins = {(root / e["dir"] / TOML_NAME).resolve(): Path(e["origin"]) for e in manifest["packages"]}
    runtime = get_runtime(manifest["runtime"])
    for entry in manifest["packages"]:
        if entry["root"]:
            runtime.load_package(root / entry["dir"], origins=origins, strict=True)
    _LOADED.add(manifest["id"])

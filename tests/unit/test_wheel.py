"""An installed wheel (not an editable checkout) carries the guest code: a `LocalSandbox` started from it gets
`CALL_API` and reaches a proxy through a real gateway (issue 9, packaging).

The wheel is built from a copy of the tracked sources (so no stale build/ folder of the checkout can leak in),
installed without dependencies into a fresh venv that borrows this environment's third-party packages through
a path file, and run from a folder outside the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "Dockerfile.sandbox", "lllm", "proxies",
           "sandbox"]

PROBE = r"""
import os, sys
import lllm
from lllm.proxies import ProxyManager
from lllm.proxies.gateway import get_gateway
from lllm.sandbox import LocalSandbox
from lllm.sandbox.image import content_hash, source_root
from lllm.sandbox.local import guest_dir

venv = sys.argv[1]
assert lllm.__file__.startswith(venv), lllm.__file__
assert str(guest_dir()).startswith(venv), guest_dir()
assert str(source_root()).startswith(venv), source_root()
print("hash", content_hash())
with LocalSandbox(cell_timeout=60) as sb:
    manager = ProxyManager(["fmp"], source="offline")
    with get_gateway().open_session(sb.session_dir, manager, session_id="wheel-test"):
        res = sb.run_cell('rows = CALL_API("fmp/price", {"symbol": "AAPL", "period": "1y"})\nlen(rows) > 100')
        print("cell", res.status, res.result, res.text[-500:] if res.status != "ok" else "")
"""


def test_a_wheel_install_runs_call_api_in_a_local_sandbox(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                            str(src)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("lllm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("lllm/sandbox/image_source/sandbox/lllm_guest.py",
                   "lllm/sandbox/image_source/sandbox/lllm_kernel_init.py",
                   "lllm/sandbox/image_source/sandbox/kernel_start.py",
                   "lllm/sandbox/image_source/Dockerfile.sandbox", "lllm/sandbox/seccomp.json"):
        assert needed in names, f"{needed} is missing from the wheel"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # this environment's third-party packages, as plain paths: its .pth files (our editable install) are not read
    Path(site, "borrowed-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LLLM_SOURCE_ROOT")}
    run = subprocess.run([str(python), "-c", PROBE, str(venv)], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "cell ok True" in run.stdout, run.stdout
    from lllm.sandbox.image import content_hash

    assert f"hash {content_hash()}" in run.stdout  # the wheel's copy builds the very same image

"""JupyterSession on a real container, and the sandbox image: content-hashed, idempotent, nothing extra inside."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import docker
import nbformat
import pytest

from lllm.sandbox import DockerSandbox, JupyterSession, SandboxLimits
from lllm.sandbox.image import content_hash, ensure_image, image_name

pytestmark = pytest.mark.docker


def test_notebook_of_a_docker_session(sandbox_image: str, tmp_path: Path) -> None:
    target = tmp_path / "analysis.ipynb"
    with DockerSandbox(image=sandbox_image, limits=SandboxLimits(memory="384m"), cell_timeout=10) as sb:
        nb = JupyterSession(sb, path=target, title="A session", autosave=True)
        nb.add_markdown("Load some numbers and plot them.")
        nb.run("import pandas as pd\ndf = pd.DataFrame({'x': [1, 2, 3], 'y': [2, 4, 9]})\nprint(len(df))\ndf")
        nb.run("import matplotlib.pyplot as plt\ndf.plot(x='x', y='y')\nplt.show()")
        nb.run("df['z']")
        nb.run("while True: pass", timeout=1)
    book = nbformat.read(target, as_version=4)
    nbformat.validate(book)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert [c.cell_type for c in book.cells[:2]] == ["markdown", "markdown"] and len(code) == 4
    first = {o.output_type: o for o in code[0].outputs}
    assert first["stream"].text == "3\n" and "text/html" in first["execute_result"].data
    assert code[0].execution_count == 1
    assert any(o.output_type == "display_data" and "image/png" in o.data for o in code[1].outputs)
    assert any(o.output_type == "error" and o.ename == "KeyError" for o in code[2].outputs)
    assert code[3].metadata["lllm"]["status"] == "timeout"
    assert book.metadata["lllm"]["sandbox"] == "docker"


def test_image_is_idempotent_and_content_hashed(sandbox_image: str, tmp_path: Path) -> None:
    assert sandbox_image == image_name() and sandbox_image.startswith("lllm-sandbox:")
    t0 = time.monotonic()
    assert ensure_image() == sandbox_image
    assert time.monotonic() - t0 < 1.0  # present: one inspect, no build
    root = Path(__file__).resolve().parents[2]
    copy = tmp_path / "src"
    (copy / "sandbox").mkdir(parents=True)
    shutil.copy(root / "Dockerfile.sandbox", copy / "Dockerfile.sandbox")
    for path in (root / "sandbox").glob("*"):
        if path.is_file():
            shutil.copy(path, copy / "sandbox" / path.name)
    assert content_hash(copy) == content_hash(root)
    (copy / "sandbox" / "lllm_kernel_init.py").write_text("# changed guest code\n")
    assert content_hash(copy) != content_hash(root)  # a guest change means a new tag, so a rebuild


def test_image_holds_nothing_extra(sandbox_image: str) -> None:
    client = docker.from_env()
    image = client.images.get(sandbox_image)
    assert image.attrs["Config"]["User"] == "1000:1000"
    assert image.attrs["Config"]["Entrypoint"] == ["/usr/bin/tini", "--"]
    script = ("for t in gcc cc c++ g++ clang make sudo docker apt-get; do command -v $t >/dev/null && echo has-$t; done; "
              "find / -xdev -perm /6000 -type f 2>/dev/null | head -5; "
              "python3 -c 'import ipykernel, numpy, pandas, matplotlib; print(\"ok\")'")
    out = client.containers.run(sandbox_image, entrypoint=["sh", "-c", script], network_mode="none", remove=True,
                                labels={"lllm.sandbox": "0"})
    lines = out.decode().split()
    assert lines == ["has-apt-get", "ok"] or lines == ["ok"], lines  # no compiler, no sudo, no setuid binary


def test_cli_build_is_quick_when_the_image_exists(sandbox_image: str) -> None:
    import subprocess
    import sys

    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "lllm.cli", "sandbox", "build", "-q"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == sandbox_image
    assert time.monotonic() - t0 < 15

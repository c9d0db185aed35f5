"""`sb.save(path)` and `DockerSandbox.resume(path)`; `sb.fork(isolated=True)`; bad snapshots."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lllm.errors import SnapshotError
from lllm.sandbox.base import SandboxLimits
from lllm.sandbox.docker import DockerSandbox
from lllm.sandbox.snapshot import META, NAMESPACE, WORKSPACE_TAR, read_meta

pytestmark = pytest.mark.docker

STATE = """
import numpy as np, threading, sqlite3
data = np.arange(10) * 1.5
x = 5
_cache = {"k": 1}
def twice():
    return x * 2
class Point:
    def __init__(self, a): self.a = a
p = Point(3)
square = lambda v: v * v
holder = {"fn": twice, "rows": [1, 2]}
gen = (i for i in range(3))
worker = threading.Thread(target=lambda: None)
db = sqlite3.connect(':memory:')
import os; os.makedirs('sub', exist_ok=True); open('sub/notes.txt', 'w').write('kept')
"""


@pytest.fixture(scope="module")
def snapshot(sandbox_image: str, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("snap") / "state.snapshot"
    with DockerSandbox(image=sandbox_image, limits=SandboxLimits(memory="512m")) as sb:
        assert sb.run_cell(STATE).status == "ok"
        info = sb.save(path)
        # saving changes nothing in the kernel
        assert sb.run_cell("print(next(gen), worker.is_alive())").stdout == "0 False\n"
    assert info.meta.image == sandbox_image and info.meta.limits["memory"] == "512m"
    assert {"data", "x", "_cache", "twice", "Point", "p", "square", "np", "holder"} <= set(info.meta.saved)
    assert not [n for n in info.meta.saved if n.startswith("__") or n in ("In", "Out", "_", "_i1", "_oh")]
    assert set(info.meta.skipped) == {"gen", "worker", "db"}
    assert "generator" in info.meta.skipped["gen"] and "sqlite3.Connection" in info.meta.skipped["db"]
    return path


def test_resume_restores_variables_functions_and_files_and_says_what_was_not(snapshot: Path) -> None:
    with DockerSandbox.resume(snapshot) as sb:
        assert sb.limits.memory == "512m"
        assert sorted(sb.not_restored) == ["db", "gen", "worker"]
        first = sb.run_cell("x = 7\nprint(twice(), data.sum(), p.a, square(4), open('sub/notes.txt').read())")
        assert first.stdout == "14 67.5 3 16 kept\n", first.text  # twice() reads the resumed kernel's globals
        assert "NOT restored" in first.text and "gen (" in first.text and "db (" in first.text
        assert "NOT restored" not in sb.run_cell("print(1)").text  # told once
        # an array (saved out of band by the C pickler) comes back writable; a function held in a dict (saved
        # by dill, which a cell's function anywhere in a variable calls for) reads the resumed kernel's globals
        assert sb.run_cell("data[0] = 9.5\nprint(data[:2], holder['fn'](), holder['rows'])").stdout == \
            "[9.5 1.5] 14 [1, 2]\n"


def test_isolated_fork_is_a_new_container_with_the_same_state(sandbox_image: str) -> None:
    with DockerSandbox(image=sandbox_image) as sb:
        sb.run_cell("x = 41\nopen('f.txt', 'w').write('a')")
        twin = sb.fork(isolated=True)
        try:
            assert twin.container.id != sb.container.id and twin.sandbox_id != sb.sandbox_id
            assert twin.run_cell("x += 1; open('f.txt', 'a').write('b'); print(x)").stdout == "42\n"
            assert sb.run_cell("print(x, open('f.txt').read())").stdout == "41 a\n"  # nothing shared
        finally:
            twin.close()


def _ours() -> set[str]:
    """This test run's containers (the engine is shared: other runs' come and go meanwhile)."""
    import docker

    from lllm.sandbox._docker import LABEL_TEST_RUN

    run = os.environ["LLLM_TEST_RUN"]
    return {c.id for c in docker.from_env().containers.list(all=True, filters={"label": f"{LABEL_TEST_RUN}={run}"})}


def _rewrite(src: Path, dst: Path, **replace: bytes) -> Path:
    with tarfile.open(src) as tar, tarfile.open(dst, "w") as out:
        for member in tar.getmembers():
            data = replace.get(member.name.replace(".", "_").replace("-", "_"), tar.extractfile(member).read())
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    return dst


def test_bad_snapshots_are_refused_before_anything_starts(snapshot: Path, tmp_path: Path, sandbox_image: str) -> None:
    before = _ours()
    junk = tmp_path / "junk.snapshot"
    junk.write_bytes(b"not a tar file at all" * 100)
    with pytest.raises(SnapshotError, match="not an lllm sandbox snapshot"):
        DockerSandbox.resume(junk)
    cut = tmp_path / "cut.snapshot"
    cut.write_bytes(snapshot.read_bytes()[:-20_000])
    with pytest.raises(SnapshotError, match="corrupt|cut short|not an lllm"):
        DockerSandbox.resume(cut)
    meta = json.loads(_meta_bytes(snapshot))
    other = _rewrite(snapshot, tmp_path / "other.snapshot",
                     lllm_snapshot_json=json.dumps({**meta, "image": "lllm-sandbox:from-elsewhere"}).encode())
    with pytest.raises(SnapshotError, match="saved from image 'lllm-sandbox:from-elsewhere'"):
        DockerSandbox.resume(other)
    with pytest.raises(SnapshotError, match=r"saved from image .* not 'python:3.12-slim'"):
        DockerSandbox.resume(snapshot, image="python:3.12-slim")
    with pytest.raises(SnapshotError, match="too large for the sandbox's limits.*workspace_size"):
        DockerSandbox.resume(snapshot, limits=SandboxLimits(workspace_size="4k"))
    assert read_meta(snapshot).namespace_bytes > 0
    assert _ours() == before  # nothing was started


def _meta_bytes(path: Path) -> bytes:
    with tarfile.open(path) as tar:
        return tar.extractfile(META).read()


# -- `lllm sandbox save ID PATH`, `lllm sandbox resume PATH` -------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lllm.cli", "sandbox", *args], capture_output=True, text=True,
                          timeout=180)


def test_cli_saves_a_kept_sandbox_and_resumes_it_as_a_kept_one(sandbox_image: str, tmp_path: Path) -> None:
    run = os.environ["LLLM_TEST_RUN"]
    kept, resumed = f"save-{run}", f"resumed-{run}"
    path = tmp_path / "kept.snapshot"
    owner = DockerSandbox(image=sandbox_image, limits=SandboxLimits(memory="256m"), name=kept)
    try:
        with owner:
            owner.run_cell("x = 41\ngen = (i for i in range(3))\nopen('f.txt', 'w').write('files too')")
            saved = _cli("save", kept, str(path))
            assert saved.returncode == 0, saved.stderr
            assert f"saved sandbox {owner.sandbox_id} to {path}" in saved.stdout
            assert "not saved: gen (" in saved.stdout and "generator" in saved.stdout
            # the CLI let go of it: it runs on, unchanged, for its owner
            assert owner.run_cell("print(x, next(gen))").stdout == "41 0\n"
        out = _cli("resume", str(path), "--name", resumed)
        assert out.returncode == 0, out.stderr
        assert f"named {resumed!r}" in out.stdout and "not restored: gen (" in out.stdout, out.stdout
        assert f"a tactic call with sandbox_session={resumed!r}" in out.stdout
        assert "config has `proxy: {sandbox: {scope: session}}`" in out.stdout, out.stdout  # the local engine's
        listed = _cli("ls")
        assert resumed in listed.stdout and "session" in listed.stdout, listed.stdout
        later = DockerSandbox.attach(resumed)  # another process started it and let go of it
        first = later.run_cell("x += 1\nprint(x, open('f.txt').read())")
        assert first.stdout == "42 files too\n", first.text
        assert "NOT restored: gen (" in first.text  # the model is told, in whichever process runs the first cell
        assert "NOT restored" not in later.run_cell("print(1)").text
        assert later.sandbox_id in out.stdout
        later.detach()
        removed = _cli("rm", resumed)
        assert removed.returncode == 0, removed.stderr
    finally:
        for name in (kept, resumed):
            subprocess.run([sys.executable, "-m", "lllm.cli", "sandbox", "rm", name], capture_output=True, timeout=120)


def test_cli_errors_are_clear_and_start_nothing(snapshot: Path, tmp_path: Path) -> None:
    before = _ours()
    missing = _cli("save", "no-such-sandbox-anywhere", str(tmp_path / "x.snapshot"))
    assert missing.returncode == 1 and "no sandbox named 'no-such-sandbox-anywhere'" in missing.stderr
    assert not (tmp_path / "x.snapshot").exists()
    junk = tmp_path / "junk.snapshot"
    junk.write_bytes(b"junk" * 1000)
    corrupt = _cli("resume", str(junk))
    assert corrupt.returncode == 1 and "is not an lllm sandbox snapshot" in corrupt.stderr, corrupt.stderr
    meta = json.loads(_meta_bytes(snapshot))
    other = _rewrite(snapshot, tmp_path / "other.snapshot",
                     lllm_snapshot_json=json.dumps({**meta, "image": "lllm-sandbox:from-elsewhere"}).encode())
    assert "saved from image 'lllm-sandbox:from-elsewhere'" in _cli("resume", str(other)).stderr
    small = _rewrite(snapshot, tmp_path / "small.snapshot", lllm_snapshot_json=json.dumps(
        {**meta, "limits": {**meta["limits"], "workspace_size": "4k"}}).encode())
    too_large = _cli("resume", str(small))
    assert too_large.returncode == 1 and "too large for the sandbox's limits" in too_large.stderr
    assert _ours() == before  # nothing was started

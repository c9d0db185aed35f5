"""The reaper only removes what it owns: containers without the sandbox label, and sandboxes whose owner is on
another host, are left alone (issue 4: "removes containers whose owner process is gone")."""

from __future__ import annotations

import os
import subprocess
import sys

import docker
import pytest

from lllm.sandbox._docker import LABEL, LABEL_DIR, LABEL_HOST, LABEL_PID, LABEL_SESSION, LABEL_TEST_RUN
from lllm.sandbox._rundir import host_id
from lllm.sandbox.reaper import reap

pytestmark = pytest.mark.docker


def test_reaper_spares_unlabelled_containers_and_other_hosts(sandbox_image: str) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    client = docker.from_env()
    run = os.environ.get("LLLM_TEST_RUN", "manual")
    made = []
    try:
        # Someone else's container that merely looks like ours: the same labels minus the sandbox marker.
        foreign = client.containers.create(sandbox_image, command=["true"], network_mode="none", labels={
            "lllm.audit.foreign": run, LABEL_PID: str(dead.pid), LABEL_HOST: host_id(), LABEL_SESSION: "not-ours"})
        made.append(foreign)
        # A sandbox whose owner runs on another host (a shared engine): its pid means nothing here.
        remote = client.containers.create(sandbox_image, command=["true"], network_mode="none", labels={
            LABEL: "1", LABEL_TEST_RUN: run, LABEL_PID: str(dead.pid), LABEL_HOST: "elsewhere:0badc0de",
            LABEL_SESSION: "remote-owner", LABEL_DIR: "/etc"})
        made.append(remote)
        # The control: the same labels on this host are an orphan and go.
        local = client.containers.create(sandbox_image, command=["true"], network_mode="none", labels={
            LABEL: "1", LABEL_TEST_RUN: run, LABEL_PID: str(dead.pid), LABEL_HOST: host_id(),
            LABEL_SESSION: "local-orphan"})
        made.append(local)

        report = reap()
        assert local.name in report.containers
        assert foreign.name not in report.containers and remote.name not in report.containers
        foreign.reload()
        remote.reload()  # both still exist (reload raises NotFound otherwise)
        with pytest.raises(docker.errors.NotFound):
            local.reload()

        report = reap(all_hosts=True)  # what `lllm sandbox gc --all-hosts` does: other hosts' orphans too
        assert remote.name in report.containers and foreign.name not in report.containers
        foreign.reload()
        assert os.path.exists("/etc/passwd")  # the forged session-dir label was not deleted
    finally:
        for container in made:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass

"""lllm's seccomp profile for sandbox containers, and the `security_opt` entry that applies it.

`seccomp.json` (package data, next to this module) is Docker Engine v20.10.24's default profile
(moby/moby `profiles/seccomp/default.json` at tag v20.10.24, commit 5d6db842) with the names in `REMOVED`
taken out of every rule. Why each goes:

- `io_uring_setup`, `io_uring_enter`, `io_uring_register`: a large kernel interface with a long record of
  privilege escalations, which Docker 20.10 still allows (measured: `io_uring_setup` succeeds in a container
  here) and which no Python kernel needs. Docker itself blocks them from v25.
- `ptrace` (allowed by Docker on kernels >= 4.8): kernel code runs as the same uid as the supervisor and the
  file helpers (`lllm.sandbox.files`), so with ptrace it could rewrite their memory and forge what they tell
  the host. There is no Yama LSM on these hosts to restrict same-uid tracing. Debuggers are not part of the job.
- `process_vm_readv`/`process_vm_writev`, `kcmp`, `pidfd_getfd`, `process_madvise`: the same reach into
  another process as ptrace; Docker allows them only with CAP_SYS_PTRACE, and they are removed from that
  rule too so that no capability brings them back.
- `bpf`, `perf_event_open`: gated by CAP_SYS_ADMIN in Docker's profile (lllm drops every capability); removed
  from that rule for the same reason.

Already refused by Docker's profile and kept so: `keyctl`/`add_key`/`request_key` (the keyring is not
namespaced), `userfaultfd`, mount/namespace calls without CAP_SYS_ADMIN, `personality` other than the usual
values. The profile does not apply under gVisor, whose own user-space kernel filters the host calls.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from lllm.errors import UsageError

PROFILE_PATH = Path(__file__).with_name("seccomp.json")
BASED_ON = "moby/moby v20.10.24 profiles/seccomp/default.json"
REMOVED = frozenset({
    "io_uring_setup", "io_uring_enter", "io_uring_register", "ptrace", "process_vm_readv", "process_vm_writev",
    "kcmp", "pidfd_getfd", "process_madvise", "bpf", "perf_event_open",
})
"""Syscalls allowed by some rule of Docker 20.10.24's default profile and by none of lllm's."""

ENGINE_DEFAULT = "docker-default"
"""`seccomp_profile=` value that leaves the engine's own default profile in force."""


@lru_cache(maxsize=None)
def profile_text() -> str:
    """lllm's profile as compact JSON (what goes into `security_opt`)."""
    return json.dumps(json.loads(PROFILE_PATH.read_text(encoding="utf-8")), separators=(",", ":"))


def security_opt(profile: str | Path | None) -> list[str]:
    """The `security_opt` entries for a sandbox's seccomp profile.

    Args:
        profile: None for lllm's profile; `"docker-default"` for the engine's default; or the path of a
            seccomp profile JSON file.

    Raises:
        UsageError: the file is missing or is not a seccomp profile.
    """
    if profile is None:
        return [f"seccomp={profile_text()}"]
    if str(profile) == ENGINE_DEFAULT:
        return []
    path = Path(profile)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"seccomp_profile={str(profile)!r} is not a readable JSON file ({exc}); give the path of "
                         f"a seccomp profile, {ENGINE_DEFAULT!r}, or None for lllm's own", path=str(profile)) from exc
    if not isinstance(data, dict) or "defaultAction" not in data:
        raise UsageError(f"seccomp_profile={str(profile)!r} has no 'defaultAction': not a seccomp profile",
                         path=str(profile))
    return [f"seccomp={json.dumps(data, separators=(',', ':'))}"]

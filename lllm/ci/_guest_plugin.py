"""The pytest plugin that runs inside the sandbox (stdlib and pytest only: it is sent as the source of
`python3 -c`, never imported on the host).

Run as `__main__`, it reads its settings as JSON on stdin (the nonce, which shard it is, the recorded durations, which tests to
keep, the per-test timeout), then runs `pytest.main` with the command's arguments and itself as a plugin.
What it learns goes out as JSON lines on a copy of the process's stdout taken before pytest's capture starts,
each line `\\n<PREFIX><nonce> {json}\\n`, so the tests' own output (with `-s`) cannot split a record.

Events: `assigned` (this shard's node ids, after collection and the split), `start` (a test began),
`result` (a test ended: outcome, duration, message, traceback), `collect_error`, `net` (a test tried to
reach another host), `hung` (a test ran past its timeout and did not stop: the process ends), `end`
(exit status and resource use).

Everything here can be rewritten by the tests it runs: the host caps and validates every line it reads.
"""

import json
import os
import signal
import sys
import threading
import time

PREFIX = "\x1elllm-ci "
MAX_TEXT = 4000
HUNG_EXIT = 70
_OUT = 1
_MAIN_PID = os.getpid()
_NONCE = ""


def _emit(event, **fields):
    if os.getpid() != _MAIN_PID:
        os._exit(1)  # a forked child of a test must not report as the test run (nor go on running pytest)
    fields["ev"] = event
    line = "\n" + PREFIX + _NONCE + " " + json.dumps(fields, default=str) + "\n"
    data = line.encode("utf-8", "replace")
    while data:
        data = data[os.write(_OUT, data):]


def _cut(text):
    text = str(text or "")
    if len(text) <= MAX_TEXT:
        return text
    half = MAX_TEXT // 2
    return text[:half] + "\n[... %d characters cut ...]\n" % (len(text) - MAX_TEXT) + text[-half:]


class PerTestTimeout(Exception):
    """Raised in a test that ran past the per-test timeout."""


class CIPlugin:
    def __init__(self, settings):
        self.shard = int(settings.get("shard", 0))
        self.shards = max(1, int(settings.get("shards", 1)))
        self.durations = settings.get("durations") or {}
        keep = settings.get("keep")
        self.keep = None if keep is None else set(keep)
        self.test_timeout = settings.get("test_timeout")
        self.current = None
        self.started = {}
        self.parts = {}
        self.watchdog = None

    # -- network: an audit hook sees every connect and name lookup; loopback and unix sockets are fine ----------
    def audit(self, event, args):
        if event not in ("socket.connect", "socket.getaddrinfo") or self.current is None:
            return
        try:
            if event == "socket.connect":
                address = args[1]
                if not isinstance(address, tuple):
                    return  # a unix socket
                host = str(address[0])
                target = "%s:%s" % (host, address[1] if len(address) > 1 else "")
            else:
                host = str(args[0])
                target = "%s:%s" % (host, args[1])
            if host in ("localhost", "127.0.0.1", "::1", "", "None") or host.startswith("127."):
                return
            _emit("net", nodeid=self.current, target=target[:200])
        except Exception:  # noqa: BLE001 - never break the test over a report
            pass

    # -- the split: every shard collects the same tests and keeps its own part -----------------------------------
    def pytest_collection_modifyitems(self, session, config, items):
        ids = [item.nodeid for item in items]
        if self.keep is not None:
            mine = set(i for i in ids if i in self.keep)
        elif self.shards > 1:
            mine = set(split(ids, self.shards, self.durations)[self.shard])
        else:
            mine = set(ids)
        kept = [item for item in items if item.nodeid in mine]
        dropped = [item for item in items if item.nodeid not in mine]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept
        _emit("assigned", nodeids=[item.nodeid for item in kept], collected=len(ids))

    def pytest_collectreport(self, report):
        if report.failed:
            _emit("collect_error", nodeid=report.nodeid or ".", message=_cut(_first_line(report)),
                  traceback=_cut(report.longreprtext))

    # -- one test ----------------------------------------------------------------------------------------------
    def pytest_runtest_logstart(self, nodeid, location):
        self.current = nodeid
        self.started[nodeid] = time.monotonic()
        self.parts[nodeid] = []
        _emit("start", nodeid=nodeid)
        self._arm(nodeid)

    def pytest_runtest_logreport(self, report):
        self.parts.setdefault(report.nodeid, []).append(report)

    def pytest_runtest_logfinish(self, nodeid, location):
        self._disarm()
        reports = self.parts.pop(nodeid, [])
        outcome, message, trace = _outcome(reports)
        duration = sum(getattr(r, "duration", 0.0) for r in reports)
        _emit("result", nodeid=nodeid, outcome=outcome, duration_s=round(duration, 6), message=_cut(message),
              traceback=_cut(trace))
        self.current = None

    def _arm(self, nodeid):
        if not self.test_timeout:
            return
        limit = float(self.test_timeout)
        if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
            def on_alarm(signum, frame):
                raise PerTestTimeout("the test ran past the per-test timeout of %g s" % limit)

            signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, limit)
        # A test that ignores the alarm (blocked in C, catching it): the process ends, the host resumes the rest.
        stop = threading.Event()

        def watch():
            if not stop.wait(limit + 5.0):
                _emit("hung", nodeid=nodeid, timeout_s=limit)
                os._exit(HUNG_EXIT)

        try:
            threading.Thread(target=watch, daemon=True).start()
        except RuntimeError:  # no thread to be had (a test used up the process limit): the alarm alone, then
            return
        self.watchdog = stop

    def _disarm(self):
        if hasattr(signal, "setitimer") and self.test_timeout and threading.current_thread() is threading.main_thread():
            signal.setitimer(signal.ITIMER_REAL, 0)
        if self.watchdog is not None:
            self.watchdog.set()
            self.watchdog = None

    def pytest_sessionfinish(self, session, exitstatus):
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        _emit("end", exitstatus=int(exitstatus), cpu_s=round(usage.ru_utime + usage.ru_stime + children.ru_utime
                                                                + children.ru_stime, 3),
              max_rss_kb=max(usage.ru_maxrss, children.ru_maxrss))


def split(ids, shards, durations):
    """Deal node ids out to `shards` lists: by recorded duration (longest first, each to the least loaded
    shard) when there are durations, else round robin in collection order. The same on every shard."""
    if not durations:
        return [ids[i::shards] for i in range(shards)]
    known = sorted(float(v) for v in durations.values()) or [0.0]
    default = known[len(known) // 2]
    order = sorted(range(len(ids)), key=lambda i: (-float(durations.get(ids[i], default)), i))
    loads = [0.0] * shards
    parts: list = [[] for _ in range(shards)]
    for i in order:
        target = min(range(shards), key=lambda s: (loads[s], s))
        loads[target] += float(durations.get(ids[i], default)) + 0.001
        parts[target].append(i)
    return [[ids[i] for i in sorted(part)] for part in parts]


def _first_line(report):
    text = str(getattr(report, "longreprtext", "") or "")
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return str(crash.message).splitlines()[0] if str(crash.message) else text
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E ")]
    return (errors[0][1:].strip() if errors else lines[-1]) if lines else ""


def _outcome(reports):
    """pytest's reports of one test's setup, call and teardown, as one outcome."""
    outcome, message, trace = "passed", "", ""
    for report in reports:
        xfail = hasattr(report, "wasxfail")
        if report.when == "call":
            if xfail:
                outcome = "xfail" if report.skipped else "xpass"
                message = str(report.wasxfail or "")
            elif report.failed:
                outcome = "failed"
            elif report.skipped:
                outcome = "skipped"
        elif report.skipped and outcome == "passed":
            outcome = "xfail" if xfail else "skipped"
        elif report.failed:
            outcome = "error" if outcome not in ("failed",) else outcome
        if report.failed and not trace:
            message, trace = _first_line(report), report.longreprtext
        if report.skipped and not message and not xfail:
            longrepr = report.longrepr
            message = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
    return outcome, message, trace


def main():
    global _OUT, _MAIN_PID, _NONCE
    _OUT = os.dup(1)  # before pytest's capture takes fd 1 over
    _MAIN_PID = os.getpid()
    settings = json.loads(sys.stdin.buffer.read() or b"{}")
    sys.stdin = open(os.devnull)  # noqa: SIM115 - the tests see an empty stdin, as under pytest
    _NONCE = str(settings.get("nonce", ""))
    import pytest

    # after -k, -m and other plugins have deselected theirs: the shard's part is of what would really run
    pytest.hookimpl(trylast=True)(CIPlugin.pytest_collection_modifyitems)
    plugin = CIPlugin(settings)
    sys.addaudithook(plugin.audit)
    code = pytest.main(sys.argv[1:], plugins=[plugin])
    sys.stdout.flush()
    os._exit(int(code))


if __name__ == "__main__":
    main()

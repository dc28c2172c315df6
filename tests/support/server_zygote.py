"""A process that has imported the server once and forks each test server from itself.

A test server's first seconds go to imports (torch, diffusers, transformers: ~4 s) and
to compiling the default safety lists (~2.5 s), the same in every one of the ~100 servers
``make test`` starts. This process pays them once per pytest-xdist worker; each server
is then a fork that runs ``flux_server.__main__.main(argv)``, the function
``python -m flux_server`` runs, with its own arguments, environment, working directory,
file descriptor limit and log file. What stays exec'd (``start_server(fresh=True)``)
is what tests the process itself: start-up errors, import-time log lines, a front that
must never import torch.

Run as ``python server_zygote.py``. One JSON line per request on stdin
(``{"argv": [...], "env": {...}, "cwd": "...", "log": "...", "rlimit_nofile": N}``);
one JSON line per event on stdout (``{"started": PID}`` in request order,
``{"exited": PID, "code": RC}`` with ``code`` as ``Popen.returncode`` gives it). The
loop is single-threaded, so a fork never copies a lock another thread holds.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import sys
import traceback
from typing import Any

# Whatever reads an environment variable at import reads the one this process was
# started with (the test's own, with HF_HUB_OFFLINE=1); a server's own variables
# (FLUXSERVE_*, POD_NAME, credentials) are read after the fork, at start.
_MAIN_PATH = ""


def preload() -> None:
    """Import what every server imports, and compile the default safety lists (the
    compiled regexes are cached per process, so every fork finds them compiled)."""
    global _MAIN_PATH
    import diffusers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from diffusers import FluxPipeline  # noqa: F401  (diffusers imports it lazily)

    import flux_server.__main__ as entry
    import flux_server.execution.engine
    import flux_server.server  # noqa: F401
    from flux_server.admission.safety_blocklist import build_blocklist, default_blocklist

    build_blocklist(default_blocklist())
    _MAIN_PATH = str(entry.__file__)


def serve(request: dict[str, Any]) -> int:
    """The forked child: become the server ``request`` describes; never returns."""
    code = 1
    try:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(number, signal.SIG_DFL)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if request.get("rlimit_nofile"):
            import resource

            limit = int(request["rlimit_nofile"])
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        if "OMP_NUM_THREADS" in request["env"]:
            # torch read it at import; this is what the variable would have set.
            import torch

            torch.set_num_threads(int(request["env"]["OMP_NUM_THREADS"]))
        from flux_server.__main__ import main

        sys.argv = [_MAIN_PATH, *request["argv"]]
        try:
            code = main(request["argv"])
        except SystemExit as exit_:
            if isinstance(exit_.code, str):
                print(exit_.code, file=sys.stderr)
                code = 1
            else:
                code = exit_.code or 0
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _say(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _reap(children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _say({"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def loop() -> None:
    children: set[int] = set()
    pending = b""
    try:
        while True:
            ready, _, _ = select.select([0], [], [], 0.05)
            _reap(children)
            if not ready:
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                return  # the test process has gone: so do its servers (below)
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    serve(json.loads(line))
                children.add(pid)
                _say({"started": pid})
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    preload()
    _say({"preloaded": os.getpid()})
    loop()

"""Processes on one machine for the multi-worker examples: free ports,
launching workers, and killing them whatever happens (no TensorFlow, no JAX)."""

import os
import signal
import socket
import subprocess
import sys
import time


def free_ports(count):
    """`count` distinct free TCP ports on 127.0.0.1."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for_workers(processes, timeout):
    """Waits for all processes; returns 0, or the first non-zero exit code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = [p.poll() for p in processes]
        failed = [c for c in codes if c not in (None, 0)]
        if failed:
            return failed[0]
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.2)
    raise TimeoutError(f"The workers did not finish within --timeout={timeout} s.")


def run_local_processes(command, envs, timeout):
    """Runs `command` once per entry of `envs` (extra environment variables);
    kills every process if one fails, on timeout and on Ctrl-C or SIGTERM.
    Returns 0, or the first non-zero exit code."""
    signal.signal(
        signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM)
    )  # run `finally` on kill too
    processes = []
    try:
        for extra in envs:
            processes.append(subprocess.Popen(command, env=dict(os.environ, **extra)))
        code = wait_for_workers(processes, timeout)
        if code:
            print(
                f"A worker failed (exit code {code}); stopping the others.",
                file=sys.stderr,
                flush=True,
            )
        return code
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
            p.wait()


def backend_from_argv(argv, default="tensorflow"):
    """The value of `--backend` in `argv` (`--backend X` or `--backend=X`)."""
    for i, arg in enumerate(argv):
        if arg == "--backend" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--backend="):
            return arg.split("=", 1)[1]
    return default


def without_option(argv, option):
    """`argv` without `option VALUE` / `option=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out

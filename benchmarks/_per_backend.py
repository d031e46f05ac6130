"""Runs a benchmark script once per Keras backend, each in a process of its
own (a process has one backend), for `--backend all`."""

import argparse
import os
import subprocess
import sys

BACKENDS = ("tensorflow", "jax", "torch")


def run_all(script, argv=None):
    """Runs `script` with `--backend <name>` and the rest of `argv` (default:
    `sys.argv[1:]`, its `--backend` dropped) for each backend in turn; exits
    with 1 naming the backends that failed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, skip = [], False
    for a in argv:  # drop --backend and its value
        if skip:
            skip = False
        elif a == "--backend":
            skip = True
        elif not a.startswith("--backend="):
            rest.append(a)
    failed = []
    for name in BACKENDS:
        print(f"\n===== {name} =====", flush=True)
        env = dict(os.environ, KERAS_BACKEND=name)
        code = subprocess.run(
            [sys.executable, os.path.abspath(script), "--backend", name, *rest], env=env
        ).returncode
        if code:
            failed.append(f"{name} (exit {code})")
    if failed:
        print("\nfailed: " + ", ".join(failed))
        sys.exit(1)


def dispatch(backend, script, argv=None):
    """For a script's `--backend` value: with "all", runs the script once per
    backend (`run_all`) and returns True (nothing left to do here);
    otherwise selects the backend for this process (before Keras is
    imported) and returns False."""
    if backend == "all":
        run_all(script, argv)
        return True
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return False


def parser(description, default=None, help=None):
    """An argument parser for a script's `description` (its docstring) with
    the `--backend` option every per-backend script takes."""
    made = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    made.add_argument(
        "--backend",
        choices=BACKENDS + ("all",),
        default=default,
        help=help or "default: KERAS_BACKEND, else tensorflow; all: one subprocess per backend",
    )
    return made

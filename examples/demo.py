"""What `make demo` runs: IndRNN and LSTM on the adding problem, both watched
by GradientBoard, in one TensorBoard log directory.

    python examples/demo.py                      # about 3 minutes on 2 CPU cores
    python examples/demo.py --seq-len 300 --steps 1000 --logdir runs/demo

Each model trains on the adding problem (`examples/adding_problem.py`) with
`ClippedOptimizer(Adam, ClipByGlobalNorm(10))` (its `--clipping global-norm`,
for both models; the official IndRNN setup clips inside the recurrence
instead) and writes, beside Keras's own
`TensorBoard` scalars, GradientBoard's gradient histograms, gradient and
update norms, clipping statistics and the gradient of the loss with respect
to every input time step. The sequences are long enough that the LSTM's
gradient fades before it reaches the first steps while IndRNN's does not;
the demo prints both, read back from the event files, and ends with the
TensorBoard command and what to look at.

The C++ start-up messages of TensorFlow and XLA (which include alarming but
harmless lines such as "failed call to cuInit" on a machine without a GPU)
go to `<logdir>/backend.log` instead of the terminal; if anything fails, the
end of that log is printed.
"""

import argparse
import contextlib
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def backend_messages_to(path):
    """Sends everything written to file descriptor 2 (C++ logging included)
    to `path`; prints the end of it if the block raises."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "w") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            with open(path) as f:
                tail = f.read()[-4000:]
            print(f"--- end of {path} ---\n{tail}", file=sys.stderr)
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seq-len", type=int, default=200)
    parser.add_argument("--steps", type=int, default=600, help="training steps per model")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--logdir", default=os.path.join("runs", "demo"))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with backend_messages_to(os.path.join(args.logdir, "backend.log")):
        import adding_problem  # noqa: PLC0415 (after the redirection: it imports Keras)

        results = {}
        for model in ("indrnn", "lstm"):
            print(f"\n=== {model.upper()} ===", flush=True)
            results[model] = adding_problem.main(
                [
                    "--model",
                    model,
                    "--seq-len",
                    str(args.seq_len),
                    "--steps",
                    str(args.steps),
                    "--eval-every",
                    str(args.eval_every),
                    "--val-size",
                    "500",
                    "--logdir",
                    args.logdir,
                    "--gradboard",
                    # Both models with the same global-norm clip, so that
                    # GradientBoard's clipping panels compare them.
                    "--clipping",
                    "global-norm",
                ]
            )
    print_summary(args, results)
    return results


def doctor_findings(run_dir):
    """The findings of the latest `diagnosis` report of a run, read back from
    its event files: `["kind at where", ...]`, `[]` for "No finding"."""
    import re

    from tensorboard.backend.event_processing import plugin_event_accumulator as pea

    acc = pea.EventAccumulator(os.path.join(run_dir, "train"), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    if "diagnosis" not in acc.Tags().get("tensors", []):
        return None
    text = acc.Tensors("diagnosis")[-1].tensor_proto.string_val[0].decode()
    return [f"{k} at {w}" for k, w in re.findall(r"^\*\*\d+\. `(\w+)` at `([^`]+)`", text, re.M)]


def print_doctor(args):
    print("\nThe gradient doctor (TensorBoard's Text dashboard, tag `diagnosis`):")
    for model, label in (("indrnn", "IndRNN"), ("lstm", "LSTM")):
        found = doctor_findings(os.path.join(args.logdir, f"{model}_T{args.seq_len}"))
        if found is None:
            what = "no report written"
        else:
            what = "; ".join(found) if found else "no finding"
        print(f"    {label:7s}{what}")


def print_summary(args, results):
    print_doctor(args)
    tensorboard = os.path.join(os.path.relpath(os.path.dirname(sys.executable)), "tensorboard")
    if not os.path.exists(tensorboard):
        tensorboard = "tensorboard"
    print(
        f"""
Validation MSE after {args.steps} steps at T={args.seq_len} (always answering 1 gives 0.167):
    IndRNN {results["indrnn"]:.4f}    LSTM {results["lstm"]:.4f}

Both runs are in {args.logdir}/. To look at them:
    {tensorboard} --logdir {args.logdir}
then open http://localhost:6006 and compare the two runs:
  Images       time_gradient/input: |dLoss/dx_t| over the time steps t, one picture per epoch
               (slider). IndRNN's gradient reaches the first steps; the LSTM's fades
               out long before them.
  Histograms   gradients/...: the gradient of every variable, per epoch.
  Scalars      gradient_norm/global (before clipping), gradient_norm/global_clipped,
               clipping/clipped_fraction, update_ratio/..., epoch_loss.
  Text         diagnosis: the doctor's report of each epoch, each finding with its advice.
  Logs of the backend (and the doctor's warnings): {args.logdir}/backend.log""",
        flush=True,
    )


if __name__ == "__main__":
    main()

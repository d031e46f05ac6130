"""`model.fit` across processes and hosts on JAX, with ClippedOptimizer and GradientBoard.

Keras's JAX distribution API runs `fit` data-parallel over every device of
every process (`keras.distribution.DataParallel`); the gradient the
optimizer sees is already the global one, so `ClippedOptimizer` clips the
gradient of the whole global batch. The model classifies scikit-learn's 8x8
digits read row by row (IndRNN, GroupNorm, Dense); the optimizer is
`ClippedOptimizer(Adam, ClipByGlobalNorm)`.

Each process feeds its own consecutive share of every global batch. On N
hosts, run on each (process i of N, the first host's address as coordinator):

    python examples/multi_worker.py --backend jax --coordinator host1:12345 \\
        --num-processes N --process-id i

Process 0 (the chief) writes the GradientBoard logs and the weights. On one
machine, `--local-workers 2` starts 2 processes on 127.0.0.1 (CPU
collectives through gloo), then trains the same model in one process on the
same global batches and prints, as its last line,
`max weight difference: <float>`.
"""

import argparse
import os
import sys
import time

from local_cluster import (
    free_ports,  # examples/ is on sys.path
    run_local_processes,
    without_option,
)

os.environ["KERAS_BACKEND"] = "jax"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--global-batch-size", type=int, default=64)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--clip-norm", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logdir", default=os.path.join("runs", "multi_worker_jax"))
    parser.add_argument("--out", default=os.path.join("runs", "multi_worker_jax", "weights.npz"))
    parser.add_argument(
        "--local-workers", type=int, default=None, help="start this many processes on 127.0.0.1"
    )
    # Defaults from Keras's own variables, which --local-workers sets for each process.
    env = os.environ.get
    parser.add_argument(
        "--coordinator",
        default=env("KERAS_DISTRIBUTION_JOB_ADDRESSES"),
        help="host:port of process 0",
    )
    parser.add_argument(
        "--num-processes", type=int, default=int(env("KERAS_DISTRIBUTION_NUM_PROCESSES", 1))
    )
    parser.add_argument(
        "--process-id", type=int, default=int(env("KERAS_DISTRIBUTION_PROCESS_ID", 0))
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds to wait for --local-workers"
    )
    args = parser.parse_args(argv)
    if args.global_batch_size % max(args.num_processes, args.local_workers or 1):
        parser.error("--global-batch-size must be a multiple of the number of processes")
    return args


def load_data(seed):
    """Digits as sequences of 8 rows of 8 pixels in [0, 1], in a fixed shuffled order."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    x = (digits.images[order] / 16.0).astype("float32")
    return x, digits.target[order].astype("int32")


def local_share(x, y, global_batch_size, num_processes, process_id):
    """This process's consecutive share of every full global batch."""
    import numpy as np

    per = global_batch_size // num_processes
    starts = range(0, len(x) - global_batch_size + 1, global_batch_size)
    rows = np.concatenate(
        [np.arange(s + process_id * per, s + (process_id + 1) * per) for s in starts]
    )
    return x[rows], y[rows], per


def build(args):
    import keras

    import keras_gradkit as gk

    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8)),
            gk.layers.IndRNN(args.units, return_sequences=True),
            gk.layers.GroupNorm(groups=4),
            gk.layers.IndRNN(args.units),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    # Every process creates the same variables: gradient copies on from the start.
    optimizer = gk.optimizers.ClippedOptimizer(
        keras.optimizers.Adam(args.learning_rate),
        gk.clipping.ClipByGlobalNorm(args.clip_norm),
        record_gradients=True,
    )
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


def run_process(args):
    """One process of the job (or the whole job when `num_processes` is 1)."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import keras
    import numpy as np

    import keras_gradkit as gk

    if args.num_processes > 1:
        keras.distribution.initialize(
            job_addresses=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
        # The data is already split by process: no auto-sharding (that needs tf.data).
        distribution = keras.distribution.DataParallel(
            devices=keras.distribution.list_devices(), auto_shard_dataset=False
        )
        keras.distribution.set_distribution(distribution)
    x, y = load_data(args.seed)
    x_local, y_local, local_batch = local_share(
        x, y, args.global_batch_size, args.num_processes, args.process_id
    )
    model = build(args)
    chief = args.process_id == 0
    callbacks = [gk.callbacks.GradientBoard(args.logdir, update_freq="batch")] if chief else []
    start = time.perf_counter()
    model.fit(
        x_local,
        y_local,
        batch_size=local_batch,
        epochs=args.epochs,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )
    seconds = time.perf_counter() - start
    if chief:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        np.savez(args.out, *model.get_weights())
        stats = model.optimizer.gradient_statistics()
        print(
            f"process 0 of {args.num_processes}: {len(jax.devices())} devices, {seconds:.1f} s, "
            f"final global grad norm {stats['global_norm']:.4g}, clipped {stats['clipped_steps']:.0f}/"
            f"{stats['steps']:.0f} updates; TensorBoard: tensorboard --logdir {args.logdir}",
            flush=True,
        )
    return model


def launch_and_compare(argv, args):
    """`--local-workers N` processes on 127.0.0.1, then one process on the same
    global batches; prints the largest weight difference last."""
    import numpy as np

    address = f"127.0.0.1:{free_ports(1)[0]}"
    command = [sys.executable, os.path.abspath(__file__), *without_option(argv, "--local-workers")]
    envs = [
        {
            "KERAS_BACKEND": "jax",
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": address,
            "KERAS_DISTRIBUTION_NUM_PROCESSES": str(args.local_workers),
            "KERAS_DISTRIBUTION_PROCESS_ID": str(i),
        }
        for i in range(args.local_workers)
    ]
    code = run_local_processes(command, envs, args.timeout)
    if code:
        return code
    distributed = np.load(args.out)
    single_argv = without_option(
        without_option(without_option(argv, "--local-workers"), "--out"), "--logdir"
    )
    single = parse_args(
        single_argv
        + [
            "--out",
            args.out + ".single.npz",
            "--logdir",
            args.logdir + "_single",
            "--num-processes",
            "1",
            "--process-id",
            "0",
        ]
    )
    run_process(single)
    reference = np.load(single.out)
    difference = max(
        float(np.max(np.abs(distributed[k] - reference[k]))) for k in distributed.files
    )
    print(f"max weight difference: {difference:.3g}", flush=True)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.local_workers:
        return launch_and_compare(argv, args)
    run_process(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

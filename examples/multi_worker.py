"""Multi-worker training of the digits sequence classifier with a custom loop.

Keras 3.15 / TensorFlow 2.21 `model.fit` fails under
`tf.distribute.MultiWorkerMirroredStrategy` (keras-team/keras#20585,
tensorflow/tensorflow#72388), so this script trains with a loop of its own:
`strategy.distribute_datasets_from_function`, `strategy.run`, a
`tf.GradientTape` and `ClippedOptimizer.apply`. The model and data are those
of `examples/train_export_serve.py` (8x8 digits read row by row; IndRNN,
GroupNorm, LSTM, CosineDense); the optimizer is
`ClippedOptimizer(Adam, ClipByGlobalNorm)`, which clips the gradient summed
over all workers.

Every worker runs the same command with its own `TF_CONFIG`:

    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}' \\
        python examples/multi_worker.py            # on host1; "index": 1 on host2

Worker 0 is the chief: it prints, writes the GradientBoard statistics
(`<logdir>/<run>/train`) and saves the model (`--out`). Without `TF_CONFIG`
the script trains in one process. To try several workers on one machine:

    python examples/multi_worker.py --local-workers 2     # 2 processes on 127.0.0.1
    python examples/multi_worker.py                       # the same training in one process

Each global batch of `--global-batch-size` examples is split into equal
consecutive shards, shard i for worker i, and the loss is
`sum(per-example losses) / global batch size`: the summed gradient is the
gradient of the mean loss over the global batch, so N workers compute the
same updates as one process given the same global batches.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from local_cluster import (
    free_ports,  # examples/ is on sys.path
    run_local_processes,
    wait_for_workers,  # noqa: F401  (tests use it)
    without_option,
)

if __name__ == "__main__" and "--backend" in " ".join(sys.argv[1:]):
    # `--backend jax`: Keras's own fit across processes (examples/multi_worker_jax.py).
    from local_cluster import backend_from_argv

    if backend_from_argv(sys.argv[1:]) == "jax":
        import multi_worker_jax

        sys.exit(multi_worker_jax.main(without_option(sys.argv[1:], "--backend")))

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import keras_gradkit as gk


# ---------------------------------------------------------------- strategy
def make_strategy():
    """`MultiWorkerMirroredStrategy` when `TF_CONFIG` is set, else one process
    (`MirroredStrategy` over several GPUs, or the default strategy)."""
    if os.environ.get("TF_CONFIG"):
        implementation = (
            tf.distribute.experimental.CommunicationImplementation.RING
        )  # CPU collectives
        options = tf.distribute.experimental.CommunicationOptions(implementation=implementation)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """True on the worker that logs and saves (worker 0, or the only process)."""
    return strategy.extended.should_checkpoint


def task_id(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return 0 if resolver is None or resolver.task_id is None else int(resolver.task_id)


# ---------------------------------------------------------------- data
def distribute_batches(strategy, x, y, global_batch_size):
    """The global batches of `(x, y)`, in order, split over the workers.

    Worker i (input pipeline i of n) gets rows `[i * s, (i + 1) * s)` of each
    global batch, `s = global_batch_size / n`, so the shards are known and
    together are the global batch. A last incomplete batch is dropped.
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"Argument `global_batch_size` must be divisible by the number of replicas ({replicas}). "
            f"Received: global_batch_size={global_batch_size}"
        )

    def dataset_fn(context):
        shard = global_batch_size // context.num_input_pipelines
        start = context.input_pipeline_id * shard
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(
            global_batch_size, drop_remainder=True
        )
        dataset = dataset.map(lambda a, b: (a[start : start + shard], b[start : start + shard]))
        # Several replicas on this worker (GPUs): they take consecutive pieces of the shard.
        return dataset.rebatch(context.get_per_replica_batch_size(global_batch_size)).prefetch(2)

    return strategy.distribute_datasets_from_function(dataset_fn)


def epoch_order(num_examples, seed, epoch):
    """The same shuffled order on every worker."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


# ---------------------------------------------------------------- training
def make_train_step(strategy, model, optimizer, loss_fn, global_batch_size):
    """A `tf.function` running one step on every replica; returns the global mean loss.

    `loss_fn` gives per-example losses (`reduction=None`).
    """

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            per_example = loss_fn(y, model(x, training=True))
            # sum / global batch size: the all-reduce sums the replicas' gradients.
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)  # all-reduce, clip, update
        return loss

    @tf.function
    def train_step(x, y):
        losses = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return train_step


def train_epoch(train_step, batches, optimizer, board=None, log_every=1):
    """One pass over `batches`; the chief's `board` writes the gradient statistics.

    Returns the mean training loss of the epoch.
    """
    losses = []
    for x, y in batches:
        losses.append(float(train_step(x, y)))
        step = int(optimizer.iterations.numpy())
        if board is not None and step % log_every == 0:
            board.write_statistics(optimizer, step)
    return float(np.mean(losses))


def evaluate_accuracy(model, x, y, batch_size=256):
    """Accuracy of the local copy of the model (every worker holds the same weights)."""
    predictions = [
        model(x[i : i + batch_size], training=False) for i in range(0, len(x), batch_size)
    ]
    return float(np.mean(np.argmax(np.concatenate(predictions), axis=-1) == y))


def save_model(model, path, strategy):
    """Saves a `.keras` file. Every worker saves (as TensorFlow's multi-worker
    guide asks); only the chief writes to `path`, the others to a temporary
    folder that is then removed."""
    if is_chief(strategy):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        model.save(path)
        return
    folder = tempfile.mkdtemp(prefix=f"multi_worker_{task_id(strategy)}_")
    try:
        model.save(os.path.join(folder, os.path.basename(path)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def barrier(strategy):
    """Waits until every worker gets here (a sum over replicas), so that no
    worker leaves the cluster while another still needs it."""

    @tf.function
    def count_workers():
        ones = strategy.run(lambda: tf.constant(1.0))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)

    return float(count_workers())


# ---------------------------------------------------------------- one machine, N workers
def local_tf_configs(num_workers):
    """One `TF_CONFIG` (a JSON string) per worker of a cluster on 127.0.0.1."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(num_workers)]}
    return [
        json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        for i in range(num_workers)
    ]


def launch_local_workers(num_workers, worker_argv, timeout):
    """Runs this script `num_workers` times on 127.0.0.1, each with its own `TF_CONFIG`."""
    threads = str(max(1, (os.cpu_count() or 1) // num_workers))
    # the workers share this machine's cores
    envs = [
        {"TF_CONFIG": c, "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads}
        for c in local_tf_configs(num_workers)
    ]
    return run_local_processes(
        [sys.executable, os.path.abspath(__file__), *worker_argv], envs, timeout
    )


# ---------------------------------------------------------------- main
def parse_args(argv=None):
    from train_export_serve import positive_int as _positive_int  # examples/ is on sys.path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend",
        choices=["tensorflow", "jax"],
        default="tensorflow",
        help="tensorflow: the custom loop below; jax: Keras's fit across processes (multi_worker_jax.py)",
    )
    parser.add_argument("--epochs", type=_positive_int, default=10)
    parser.add_argument(
        "--global-batch-size",
        type=_positive_int,
        default=64,
        help="examples per step over all workers (divisible by the number of workers)",
    )
    parser.add_argument("--units", type=_positive_int, default=64, help="recurrent units")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--clip-norm", type=float, default=1.0, help="ClipByGlobalNorm threshold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--logdir",
        default=os.path.join("runs", "multi_worker"),
        help="the chief writes GradientBoard statistics to <logdir>/<run>/train",
    )
    parser.add_argument(
        "--log-every", type=_positive_int, default=1, help="write the statistics every N steps"
    )
    parser.add_argument(
        "--out", default=None, help="save the trained model there (.keras), chief only"
    )
    parser.add_argument(
        "--local-workers",
        type=_positive_int,
        default=None,
        help="launch N workers of this script on 127.0.0.1 and wait for them",
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds to wait for --local-workers"
    )
    args = parser.parse_args(argv)
    if not args.learning_rate > 0 or not args.clip_norm > 0:
        parser.error(
            f"--learning-rate and --clip-norm must be positive, got {args.learning_rate} and {args.clip_norm}"
        )
    if args.out is not None and not args.out.endswith(".keras"):
        parser.error(f"--out must end with .keras, got {args.out!r}")
    return args


def build_model_and_optimizer(strategy, features, args):
    """The digits classifier and `ClippedOptimizer(Adam, ClipByGlobalNorm)`, created under `strategy`."""
    from train_export_serve import (
        build_model,  # the end-to-end example's model (examples/ is on sys.path)
    )

    with strategy.scope():
        keras.utils.set_random_seed(
            args.seed
        )  # under MWMS the chief's initial values are broadcast
        model = build_model(features=features, units=args.units)
        optimizer = gk.optimizers.ClippedOptimizer(
            keras.optimizers.Adam(args.learning_rate), gk.clipping.ClipByGlobalNorm(args.clip_norm)
        )
        optimizer.build(model.trainable_variables)
    return model, optimizer


def run_worker(args):
    """Trains on this worker (or alone) and returns the measured numbers; the chief prints them."""
    from train_export_serve import load_digits_sequences

    strategy = make_strategy()
    chief = is_chief(strategy)
    say = print if chief else (lambda *a, **k: None)
    x_train, y_train, x_test, y_test = load_digits_sequences("rows", seed=args.seed)
    model, optimizer = build_model_and_optimizer(strategy, x_train.shape[2], args)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)
    train_step = make_train_step(strategy, model, optimizer, loss_fn, args.global_batch_size)
    # A new run folder each time: GradientBoard ignores steps already written in a folder.
    board = (
        gk.callbacks.GradientBoard(os.path.join(args.logdir, time.strftime("run-%Y%m%d-%H%M%S")))
        if chief
        else None
    )
    say(
        f"{strategy.num_replicas_in_sync} replica(s) ({type(strategy).__name__}), global batch "
        f"{args.global_batch_size}, {len(x_train) // args.global_batch_size} steps per epoch",
        flush=True,
    )

    epoch_seconds = []
    for epoch in range(args.epochs):
        order = epoch_order(len(x_train), args.seed, epoch)
        batches = distribute_batches(
            strategy, x_train[order], y_train[order], args.global_batch_size
        )
        start = time.perf_counter()
        loss = train_epoch(train_step, batches, optimizer, board, args.log_every)
        epoch_seconds.append(time.perf_counter() - start)
        say(
            f"epoch {epoch + 1:3d}/{args.epochs}  {epoch_seconds[-1]:6.2f} s  loss {loss:.4f}  "
            f"global grad norm {optimizer.gradient_statistics()['global_norm']:.4g}",
            flush=True,
        )

    stats = optimizer.gradient_statistics()
    result = {
        "replicas": strategy.num_replicas_in_sync,
        "seconds_per_epoch": float(np.mean(epoch_seconds[1:] or epoch_seconds)),
        "first_epoch_seconds": epoch_seconds[0],
        "test_accuracy": evaluate_accuracy(model, x_test, y_test),
        "final_global_norm": stats["global_norm"],
        "clipped_steps": int(stats["clipped_steps"]),
        "steps": int(stats["steps"]),
    }
    if args.out:
        save_model(model, args.out, strategy)
    barrier(strategy)
    say(
        f"done: {result['seconds_per_epoch']:.2f} s per epoch (first epoch, with tracing: "
        f"{result['first_epoch_seconds']:.2f} s), test accuracy {result['test_accuracy']:.4f}, final global grad "
        f"norm {result['final_global_norm']:.4g}, clipped {result['clipped_steps']}/{result['steps']} steps",
        flush=True,
    )
    say(
        f"TensorBoard: tensorboard --logdir {args.logdir}"
        + (f"; model saved to {args.out}" if args.out else "")
    )
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.local_workers:
        return launch_local_workers(
            args.local_workers, without_option(argv, "--local-workers"), args.timeout
        )
    run_worker(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The recording contract (`keras_gradkit.recording.contract`): every
backend implements it in full, totals are named, and a step's norms are
computed once."""

import keras
import numpy as np
import pytest

from keras_gradkit import backend, clipping, recording
from keras_gradkit.backend.common import norms, variable_sink
from keras_gradkit.recording import contract


def test_the_running_backend_implements_the_contract():
    module = backend.get("recording")
    assert isinstance(module, contract.RecordingBackend)
    sink = module.Sink({"values": [(3,)]}, len(contract.Totals._fields))
    assert isinstance(sink, contract.Sink)


def test_a_published_step_reads_back_with_named_totals():
    variables = [keras.Variable(np.ones((2,), "float32"), name="w")]
    recorder = recording.Recorder(variables, update_norms=True)
    assert recorder.latest() is None
    assert recorder.totals() == contract.Totals()
    scalars = contract.StepScalars(
        step=0.0,
        global_norm=3.0,
        global_norm_clipped=1.0,
        threshold=1.0,
        clipped=True,
        skipped=False,
        loss_scale=float("nan"),
    )
    update = (keras.ops.convert_to_tensor([0.5]), keras.ops.convert_to_tensor([2.0]))
    for _ in range(2):
        recorder.publish(True, scalars, keras.ops.convert_to_tensor([3.0]), update)
    latest = recorder.latest()
    assert latest.global_norm == 3.0 and latest.clipped and not latest.skipped
    totals = latest.totals
    assert (totals.steps, totals.clipped_steps, totals.applied_steps) == (2, 2, 2)
    assert totals.global_norm_sum == 6.0 and totals.global_norm_clipped_sum == 2.0
    np.testing.assert_allclose(totals.update_ratio_square_sum, 2 * 0.25**2, rtol=1e-6)
    assert totals.since(contract.Totals(steps=1)).steps == 1


def test_a_micro_step_is_not_counted():
    variables = [keras.Variable(np.ones((2,), "float32"))]
    recorder = recording.Recorder(variables, update_norms=False)
    scalars = contract.StepScalars(0.0, 1.0, 1.0, float("nan"), False, False, float("nan"))
    recorder.publish(False, scalars, keras.ops.convert_to_tensor([1.0]))
    assert recorder.latest() is None and recorder.totals().steps == 0


def test_the_policy_reuses_the_norms_of_the_step():
    grads = [keras.ops.convert_to_tensor(np.array([3.0, 4.0], "float32"))]
    planted = [keras.ops.convert_to_tensor(np.float32(100.0))]  # not the true square (25)
    with norms.reusing(grads, planted):
        inside = float(keras.ops.convert_to_numpy(clipping.global_norm(grads)))
    outside = float(keras.ops.convert_to_numpy(clipping.global_norm(grads)))
    assert inside == 10.0 and outside == 5.0


def test_a_policy_that_returns_the_gradients_as_they_were_reports_the_same_norm():
    """A policy that returns the gradients it was given (no clipping; a
    skipped non-finite step): the norm after it is the norm before it,
    reused rather than computed again; a policy that returns some of them
    as they were and changes the others: the norm of what it returned."""
    variables = [keras.Variable(np.zeros((2,), "float32")), keras.Variable(np.zeros((1,)))]
    optimizer = keras.optimizers.SGD()
    optimizer.build(variables)
    as_float = lambda t: float(keras.ops.convert_to_numpy(t))
    for grads in (
        [np.array([3.0, 4.0], "float32"), np.array([12.0], "float32")],
        [None, np.array([12.0], "float32")],
        [np.array([3.0, 4.0], "float16"), np.array([12.0], "float32")],
    ):
        measured = recording.measure_step(optimizer, grads, variables, clipping.NoClip())
        expected = float(
            np.sqrt(sum(np.sum(np.square(g, dtype="float32")) for g in grads if g is not None))
        )
        assert as_float(measured.global_norm) == expected
        assert as_float(measured.global_norm_clipped) == expected
        if keras.backend.backend() == "torch":  # the same tensors back: the norm reused
            assert measured.global_norm_clipped is measured.global_norm
        assert not bool(keras.ops.convert_to_numpy(measured.info["clipped"]))
    grads = [np.array([3.0, np.inf], "float32"), np.array([12.0], "float32")]
    measured = recording.measure_step(optimizer, grads, variables, clipping.SkipNonFinite())
    assert (
        as_float(measured.global_norm) == np.inf
        and as_float(measured.global_norm_clipped) == np.inf
    )
    assert bool(keras.ops.convert_to_numpy(measured.info["skip"]))

    class HalveTheSecond(clipping.ClippingPolicy):
        def apply(self, grads, variables, state):
            grads = list(grads)
            return (
                [grads[0], grads[1] * 0.5],
                [],
                {"threshold": 1.0, "clipped": True, "skip": False},
            )

    grads = [np.array([3.0, 4.0], "float32"), np.array([12.0], "float32")]
    measured = recording.measure_step(optimizer, grads, variables, HalveTheSecond())
    assert as_float(measured.global_norm) == 13.0
    np.testing.assert_allclose(
        as_float(measured.global_norm_clipped), np.sqrt(25.0 + 36.0), rtol=1e-6
    )


def test_measure_step_matches_numpy():
    variables = [keras.Variable(np.zeros((2,), "float32")), keras.Variable(np.zeros((1,)))]
    optimizer = keras.optimizers.SGD()
    optimizer.build(variables)
    grads = [np.array([3.0, 4.0], "float32"), np.array([12.0], "float32")]
    measured = recording.measure_step(optimizer, grads, variables, clipping.ClipByGlobalNorm(6.5))
    as_float = lambda t: float(keras.ops.convert_to_numpy(t))
    assert [as_float(n) for n in measured.norms] == [5.0, 12.0]
    assert as_float(measured.global_norm) == 13.0
    np.testing.assert_allclose(as_float(measured.global_norm_clipped), 6.5, rtol=1e-6)
    assert bool(keras.ops.convert_to_numpy(measured.info["clipped"]))


def _as_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def test_the_step_ops_give_keras_ops_results():
    """`backend/<name>/step_ops` (PyTorch's own ops; Keras's elsewhere) on the
    kinds of arguments the recording passes: tensors, variables, Python
    scalars, dtypes by name and as the backend's dtype objects."""
    xp = backend.get("step_ops")
    ops = keras.ops
    a = ops.convert_to_tensor(np.array([1.5, -2.0, np.inf, np.nan], "float32"))
    b = ops.convert_to_tensor(np.array([0.5, 3.0, 1.0, 2.0], "float32"))
    flag = ops.convert_to_tensor(np.array([True, False, True, False]))
    variable = keras.Variable(np.array([7.0, 8.0, 9.0, 10.0], "float32"))
    count = keras.Variable(np.int32(5), dtype="int32", trainable=False)
    half = ops.convert_to_tensor(np.float16(0.25))
    cases = {
        "cast name": (lambda m: m.cast(half, "float32"), "float32"),
        "cast dtype object": (lambda m: m.cast(half, a.dtype), "float32"),
        "cast bool": (lambda m: m.cast(flag, "float32"), "float32"),
        "convert variable": (lambda m: m.convert_to_tensor(variable), "float32"),
        "convert python bool": (lambda m: m.convert_to_tensor(False), "bool"),
        "convert nan float32": (lambda m: m.convert_to_tensor(float("nan"), "float32"), "float32"),
        "convert python float": (lambda m: m.convert_to_tensor(1.5), "float32"),
        "convert python int": (lambda m: m.convert_to_tensor(3), "int32"),
        "convert large int": (lambda m: m.convert_to_tensor(2**40), "int64"),
        "convert bool as float32": (lambda m: m.convert_to_tensor(True, "float32"), "float32"),
        "convert int as bool": (lambda m: m.convert_to_tensor(0, "bool"), "bool"),
        "where tensors": (lambda m: m.where(flag, a, b), "float32"),
        "where scalar, variable": (lambda m: m.where(flag[0], 1.0, variable), "float32"),
        "where vector, variable": (lambda m: m.where(flag[1], b, variable), "float32"),
        "stack python and tensors": (lambda m: m.stack([True, flag[0], False]), "bool"),
        "concatenate": (lambda m: m.concatenate([a, b]), "float32"),
        "logical_and": (lambda m: m.logical_and(flag, m.isfinite(a)), "bool"),
        "logical_not": (lambda m: m.logical_not(flag), "bool"),
        "sqrt": (lambda m: m.sqrt(b), "float32"),
        "sum of squares": (lambda m: m.sum(m.square(b)), "float32"),
        "divide": (lambda m: m.divide(a, m.maximum(b, 1e-30)), "float32"),
        "maximum scalar": (lambda m: m.maximum(b, 1.0), "float32"),
        "equal mod": (lambda m: m.equal(m.mod(count + 1, 3), 0), "bool"),
        "zeros": (lambda m: m.zeros((2,), "float32"), "float32"),
        "zeros_like": (lambda m: m.zeros_like(b), "float32"),
        "copy variable": (lambda m: m.copy(variable), "float32"),
    }
    if keras.backend.backend() == "jax":
        # Keras's own `where` refuses a variable on JAX; JAX's sink passes none.
        del cases["where scalar, variable"], cases["where vector, variable"]
        del cases["convert large int"]  # JAX without x64 has no int64
    for name, (f, dtype) in cases.items():
        ours, keras_own = f(xp), f(ops)
        assert keras.backend.standardize_dtype(ours.dtype) == dtype, name
        assert keras.backend.standardize_dtype(keras_own.dtype) == dtype, name
        np.testing.assert_array_equal(_as_numpy(ours), _as_numpy(keras_own), err_msg=name)
    copied = xp.copy(variable)
    xp.assign(variable, b)
    np.testing.assert_array_equal(_as_numpy(copied), [7.0, 8.0, 9.0, 10.0])
    xp.assign_add(variable, b)
    np.testing.assert_array_equal(_as_numpy(variable), 2 * _as_numpy(b))


def test_the_step_ops_convert_a_list_as_keras_converts_each_entry():
    """`convert_all`, what a step's gradients and a policy's arguments enter
    by: None stays None, and every other entry is what Keras's conversion
    makes of it (on PyTorch, a tensor already on Keras's device is passed
    through as it is)."""
    xp = backend.get("step_ops")
    tensor = keras.ops.convert_to_tensor(np.array([1.0, 2.0], "float32"))
    variable = keras.Variable(np.array([3.0], "float32"))
    values = [None, tensor, variable, np.array([4.0, 5.0], "float64"), [6, 7]]
    ours = xp.convert_all(values)
    assert ours[0] is None and len(ours) == len(values)
    for got, value in zip(ours[1:], values[1:]):
        expected = keras.ops.convert_to_tensor(value)
        assert keras.ops.is_tensor(got)
        assert keras.backend.standardize_dtype(got.dtype) == keras.backend.standardize_dtype(
            expected.dtype
        )
        np.testing.assert_array_equal(_as_numpy(got), _as_numpy(expected))
    if keras.backend.backend() == "torch":
        assert ours[1] is tensor  # on Keras's device: no copy


def test_the_torch_step_ops_move_a_tensor_to_keras_device_as_keras_does():
    """A tensor that is not on Keras's device (a `keras.device` scope) moves
    there, as Keras's own conversion moves it; so do Python scalars."""
    if keras.backend.backend() != "torch":
        pytest.skip("PyTorch's step ops (backend/torch/step_ops.py)")
    import torch

    xp = backend.get("step_ops")
    tensor = keras.ops.ones((2,))  # on Keras's device
    with keras.device("meta"):  # a device without data, on any machine
        keras_own = keras.ops.convert_to_tensor(tensor)
        (ours,) = xp.convert_all([tensor])
        scalar = xp.convert_to_tensor(2.0, "float32")
    assert keras_own.device.type == "meta"
    assert ours.device == keras_own.device and scalar.device == keras_own.device
    assert tuple(ours.shape) == (2,) and ours.dtype == keras_own.dtype
    assert xp.convert_all([tensor])[0] is tensor  # on Keras's device again: passed through
    with keras.device("cpu:0"):  # the CPU named with an index: the same device
        cpu = torch.ones((2,))
        assert xp.convert_all([cpu])[0] is cpu


def test_the_step_ops_leave_a_write_in_a_stateless_scope_to_the_scope():
    xp = backend.get("step_ops")
    variable = keras.Variable(np.ones((2,), "float32"))
    with keras.StatelessScope() as scope:
        xp.assign(variable, np.full((2,), 5.0, "float32"))
        xp.assign_add(variable, np.full((2,), 2.0, "float32"))
        kept = scope.get_current_value(variable)
    np.testing.assert_array_equal(_as_numpy(variable), [1.0, 1.0])  # not written
    np.testing.assert_array_equal(_as_numpy(kept), [7.0, 7.0])  # the scope has it


@pytest.mark.parametrize("fallback", [False, True], ids=["backend", "torch_fallback"])
def test_the_backends_norms_of_several_tensors_match_numpy(fallback, monkeypatch):
    """`backend/<name>/norms` (on PyTorch one multi-tensor call each, or the
    per-tensor loop where torch lacks the op): float16 squares summed in
    float32, a scalar, an empty tensor, no tensor at all."""
    if fallback:
        if keras.backend.backend() != "torch":
            pytest.skip("the fallbacks are PyTorch's (backend/torch/foreach.py)")
        from keras_gradkit.backend.torch import foreach

        for op in ("_POWSUM", "_SQRT", "_SUB"):
            monkeypatch.setattr(foreach, op, None)
    xp = backend.get("norms")
    rng = np.random.default_rng(0)
    arrays = [
        rng.normal(size=(5, 3)).astype("float32"),
        np.full((4,), 1e3, "float16"),  # 1e6 per square: float16 would overflow
        np.float32(-3.0),
        np.zeros((0, 2), "float32"),
    ]
    tensors = [keras.ops.convert_to_tensor(a) for a in arrays]
    squares = xp.squared_norms(tensors)
    expected = [np.sum(np.square(a.astype("float64"))) for a in arrays]
    for square, want in zip(squares, expected):
        assert keras.backend.standardize_dtype(square.dtype) == "float32"
        np.testing.assert_allclose(_as_numpy(square), want, rtol=1e-6)
    roots = xp.sqrts(squares)
    np.testing.assert_allclose([_as_numpy(r) for r in roots], np.sqrt(expected), rtol=1e-6)
    others = [keras.ops.convert_to_tensor(np.ones_like(a)) for a in arrays]
    for d, a in zip(xp.differences(tensors, others), arrays):
        np.testing.assert_array_equal(_as_numpy(d), a - np.ones_like(a))
    assert list(xp.squared_norms([])) == [] and list(xp.sqrts([])) == []
    assert norms.roots([None, squares[2]])[0] is None
    np.testing.assert_allclose(_as_numpy(norms.roots([None, squares[2]])[1]), 3.0)


def test_snapshots_are_copies_and_values_now_the_current_values():
    variables = [keras.Variable(np.full((2,), 1.0, "float32")), keras.Variable(np.float32(4.0))]
    reads = backend.get("recording")
    copied = reads.snapshots(variables)
    for v in variables:
        v.assign(v + 1.0)
    now = reads.values_now(variables)
    np.testing.assert_array_equal(_as_numpy(copied[0]), [1.0, 1.0])
    np.testing.assert_array_equal(_as_numpy(copied[1]), 4.0)
    if keras.backend.backend() == "torch":  # outside autograd, as the update is
        assert not any(t.requires_grad for t in copied)
    np.testing.assert_array_equal(_as_numpy(now[0]), [2.0, 2.0])
    np.testing.assert_array_equal(_as_numpy(now[1]), 5.0)
    # In a StatelessScope the reads are the scope's values, not the storage.
    with keras.StatelessScope(state_mapping=[(variables[0], np.full((2,), 9.0, "float32"))]):
        in_scope = reads.values_now(variables)
        copied_in_scope = reads.snapshots(variables)
    np.testing.assert_array_equal(_as_numpy(in_scope[0]), [9.0, 9.0])
    np.testing.assert_array_equal(_as_numpy(copied_in_scope[0]), [9.0, 9.0])
    np.testing.assert_array_equal(_as_numpy(in_scope[1]), 5.0)


@pytest.mark.parametrize("fallback", [False, True], ids=["backend", "torch_fallback"])
def test_a_sink_publishes_the_same_when_the_step_counts_in_any_case(fallback, monkeypatch):
    """`when=True` (PyTorch: one multi-tensor copy, or a copy per tensor where
    torch lacks the op) and a true boolean tensor (chosen with `where`) keep
    the same values and totals; a false one keeps nothing; a value of the
    wrong shape is refused either way, one that would broadcast too."""
    if fallback:
        if keras.backend.backend() != "torch":
            pytest.skip("the fallbacks are PyTorch's (backend/torch/foreach.py)")
        from keras_gradkit.backend.torch import foreach

        monkeypatch.setattr(foreach, "_COPY", None)
    spec = {"a": [(3,), ()], "b": [(2, 2)]}
    counts = keras.ops.convert_to_tensor(np.arange(9, dtype="float32"))
    values = {
        "a": [keras.ops.convert_to_tensor([1.0, 2.0, 3.0]), keras.ops.convert_to_tensor(4.0)],
        "b": [keras.ops.convert_to_tensor(np.eye(2, dtype="float32"))],
    }
    reads = []
    for when in (True, keras.ops.convert_to_tensor(True)):
        sink = backend.get("recording").Sink(spec, 9)
        sink.publish(keras.ops.convert_to_tensor(False), values, counts)
        assert sink.read()[0] is None
        for _ in range(2):
            sink.publish(when, values, counts)
        reads.append(sink.read())
    for (got, totals), want in zip(reads, (values, values)):
        np.testing.assert_array_equal(totals, 2 * np.arange(9))
        for name in spec:
            for g, w in zip(got[name], want[name]):
                np.testing.assert_array_equal(g, _as_numpy(w))
    for when in (True, keras.ops.convert_to_tensor(True)):
        sink = backend.get("recording").Sink(spec, 9)
        with pytest.raises(ValueError, match="shape"):
            sink.publish(when, {"a": [values["b"][0], values["a"][1]]}, counts)
        with pytest.raises(ValueError, match="shape"):  # `where` would broadcast it
            sink.publish(when, {"a": [values["a"][1], values["a"][1]]}, counts)


def test_a_sink_gains_values_after_its_first_step():
    """A sink extended after a step (GradientBoard switching the gradients
    on) publishes the new values too: PyTorch's sink reads its variables'
    storage again."""
    sink = backend.get("recording").Sink({"a": [(2,)]}, 2)
    counts = keras.ops.convert_to_tensor(np.ones(2, "float32"))
    sink.publish(True, {"a": [keras.ops.convert_to_tensor([1.0, 2.0])]}, counts)
    sink.add("b", [(3,)])
    new = {"a": [keras.ops.convert_to_tensor([3.0, 4.0])], "b": [keras.ops.ones((3,))]}
    sink.publish(True, new, counts)
    values, totals = sink.read()
    np.testing.assert_array_equal(values["a"][0], [3.0, 4.0])
    np.testing.assert_array_equal(values["b"][0], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(totals, [2.0, 2.0])


def test_a_variable_sink_leaves_a_write_in_a_stateless_scope_to_the_scope():
    sink = backend.get("recording").Sink({"a": [(2,)]}, 2)
    if not isinstance(sink, variable_sink.VariableSink):
        pytest.skip("JAX's sink is no variable: the step carries its state")
    counts = keras.ops.convert_to_tensor(np.ones(2, "float32"))
    value = keras.ops.convert_to_tensor([5.0, 6.0])
    with keras.StatelessScope() as scope:
        sink.publish(True, {"a": [value]}, counts)
        kept = scope.get_current_value(sink._variables["a"][0])
    assert sink.read()[0] is None  # nothing written outside the scope
    np.testing.assert_array_equal(_as_numpy(kept), [5.0, 6.0])

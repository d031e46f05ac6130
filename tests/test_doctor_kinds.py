"""The doctor's causes (issue 32): each kind flags a buggy model and not its
fix, with three seeds, and its advice names the cause and not the wrong
remedy; the report renders on TensorBoard's Text dashboard; the advice links
name pages and anchors of the documentation site; a GradientWarning points at
the user's `fit`."""

import re
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from gradient_testing import value_and_gradients

import keras_gradkit as gk
from keras_gradkit import clipping
from keras_gradkit.diagnostics import (
    Finding,
    GradientWarning,
    Report,
    activations,
    advice,
    checks,
)
from keras_gradkit.optimizers import ClippedOptimizer

REPO = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)


def data(seed, n=32, features=8, scale=1.0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, features)) * scale).astype("float32")
    y = rng.normal(size=(n, 1)).astype("float32")
    return x, y


def mlp(hidden, output, seed, features=8, loss="mse", optimizer="sgd"):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((features,)), *hidden, output])
    model.compile(optimizer=optimizer, loss=loss)
    return model


def kinds(report):
    return {f.kind for f in report.findings}


def finding(report, kind):
    return next(f for f in report.findings if f.kind == kind)


@pytest.mark.parametrize("seed", SEEDS)
class TestKindsFlagTheBugNotTheFix:
    def test_zero_gradient_of_a_softmax_over_one_unit(self, seed):
        x, y = data(seed)
        bug = mlp([keras.layers.Dense(8, "relu")], keras.layers.Dense(1, "softmax"), seed)
        report = gk.diagnose(bug, x, y)
        assert {"zero_gradient", "output_loss_mismatch"} <= kinds(report)
        zero = finding(report, "zero_gradient")
        # The layers named are exactly those whose gradient, taken
        # independently, is zero.
        layers = [layer for layer in bug.layers if layer.trainable_weights]
        variables = [v for layer in layers for v in layer.trainable_weights]
        _, _, grads = value_and_gradients(
            lambda: keras.ops.mean(keras.ops.square(bug(x, training=True) - keras.ops.array(y))),
            variables=variables,
        )
        assert all(np.all(g == 0) for g in grads)
        assert zero.evidence["layers"] == [layer.name for layer in layers]
        assert "softmax" in zero.advice and "activation=None" in zero.advice  # mse: regression
        fix = mlp([keras.layers.Dense(8, "relu")], keras.layers.Dense(1), seed)
        assert gk.diagnose(fix, x, y).ok

    def test_dead_units_named_with_their_fraction(self, seed):
        x, y = data(seed)
        bug = mlp(
            [
                keras.layers.Dense(16),
                keras.layers.Activation("relu"),
                keras.layers.Dense(8, "tanh"),
            ],
            keras.layers.Dense(1),
            seed,
        )
        dense = bug.layers[0]
        bias = np.zeros(16, "float32")
        bias[:10] = -50.0  # ten of sixteen units dead for any input of this scale
        dense.bias.assign(bias)
        report = gk.diagnose(bug, x, y)
        dead = finding(report, "dead_units")
        assert dead.where == bug.layers[1].name  # the separate Activation layer
        assert dead.value == pytest.approx(10 / 16)
        assert "he_normal" in dead.advice and bug.layers[1].name in dead.advice
        assert "learning rate" not in dead.advice  # before any update
        fix = mlp(
            [
                keras.layers.Dense(16, kernel_initializer="he_normal"),
                keras.layers.Activation("relu"),
                keras.layers.Dense(8, "tanh"),
            ],
            keras.layers.Dense(1),
            seed,
        )
        assert "dead_units" not in kinds(gk.diagnose(fix, x, y))

    def test_saturated_units_of_a_hidden_layer_not_the_output(self, seed):
        x, y = data(seed)
        big = keras.initializers.RandomNormal(stddev=5.0)
        bug = mlp(
            [keras.layers.Dense(32, "tanh", kernel_initializer=big)],
            keras.layers.Dense(1, "sigmoid"),
            seed,
            loss="binary_crossentropy",
        )
        y01 = (y > 0).astype("float32")
        report = gk.diagnose(bug, x, y01)
        saturated = finding(report, "saturated_units")
        assert saturated.where == bug.layers[0].name
        assert saturated.value > 0.5
        assert "glorot_uniform" in saturated.advice
        assert bug.layers[-1].name not in saturated.advice  # the output's sigmoid is not blamed
        fix = mlp([keras.layers.Dense(32, "tanh")], keras.layers.Dense(1, "sigmoid"), seed)
        fix.compile(optimizer="sgd", loss="binary_crossentropy")
        assert "saturated_units" not in kinds(gk.diagnose(fix, x, y01))

    def test_unscaled_inputs_advise_normalization(self, seed):
        x, y = data(seed, scale=1e4)
        bug = mlp([keras.layers.Dense(8, "relu")], keras.layers.Dense(1), seed)
        report = gk.diagnose(bug, x, y)
        unscaled = finding(report, "unscaled_inputs")
        assert unscaled.value > 1e3
        assert "keras.layers.Normalization" in unscaled.advice and "adapt" in unscaled.advice
        keras.utils.set_random_seed(seed)
        norm = keras.layers.Normalization()
        norm.adapt(x)
        fix = keras.Sequential(
            [keras.Input((8,)), norm, keras.layers.Dense(8, "relu"), keras.layers.Dense(1)]
        )
        fix.compile(optimizer="sgd", loss="mse")
        assert "unscaled_inputs" not in kinds(gk.diagnose(fix, x, y))

    def test_probabilities_into_a_logits_loss(self, seed):
        x, y = data(seed)
        y01 = (y > 0).astype("float32")
        bug = mlp(
            [keras.layers.Dense(8, "relu")],
            keras.layers.Dense(1, "sigmoid"),
            seed,
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
        )
        report = gk.diagnose(bug, x, y01)
        mismatch = finding(report, "output_loss_mismatch")
        assert "from_logits" in mismatch.advice
        bug.compile(optimizer="sgd", loss=keras.losses.BinaryCrossentropy())
        assert "output_loss_mismatch" not in kinds(gk.diagnose(bug, x, y01))

    def test_non_finite_forward_names_the_activation_not_the_learning_rate(self, seed):
        x, y = data(seed)
        big = keras.initializers.RandomNormal(stddev=10.0)
        bug = mlp(
            [
                keras.layers.Dense(32, "exponential", kernel_initializer=big),
                keras.layers.Dense(32, "exponential", kernel_initializer=big),
            ],
            keras.layers.Dense(1),
            seed,
        )
        report = gk.diagnose(bug, x, y)
        assert "non_finite_gradient" not in kinds(report)
        forward = finding(report, "non_finite_forward")
        assert forward.where in (bug.layers[0].name, bug.layers[1].name)
        assert "exponential" in forward.advice
        assert "learning rate" not in forward.advice
        fix = mlp(
            [keras.layers.Dense(32, "relu"), keras.layers.Dense(32, "relu")],
            keras.layers.Dense(1),
            seed,
        )
        assert gk.diagnose(fix, x, y).ok

    def test_unchanged_weights_and_a_flat_loss_in_training(self, seed, tmp_path):
        x, y = data(seed, n=16)
        bug = mlp([keras.layers.Dense(8, "relu")], keras.layers.Dense(1), seed, optimizer="sgd")
        bug.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
        board = gk.callbacks.GradientBoard(tmp_path / "bug", probe=(x, y), write_plots=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GradientWarning)
            bug.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[board], shuffle=False)
        found = {f.kind: f for f in board.findings}
        assert set(found["unchanged_weights"].evidence["layers"]) == {
            layer.name for layer in bug.layers
        }
        assert "learning rate" in found["unchanged_weights"].advice
        assert found["loss_not_decreasing"].value == pytest.approx(0.0, abs=1e-6)
        fix = mlp([keras.layers.Dense(8, "relu")], keras.layers.Dense(1), seed)
        fix.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse")
        board = gk.callbacks.GradientBoard(tmp_path / "fix", probe=(x, y), write_plots=False)
        fix.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[board], shuffle=False)
        assert not {"unchanged_weights", "loss_not_decreasing"} & {f.kind for f in board.findings}


def test_a_model_with_every_layer_frozen_has_a_zero_gradient():
    # No trainable variable to differentiate: PyTorch's autograd refuses an
    # empty list, which `diagnose` once passed on as an error.
    x, y = data(0)
    model = mlp([keras.layers.Dense(8, "relu")], keras.layers.Dense(1), 0)
    for layer in model.layers:
        layer.trainable = False
    model.compile(optimizer="sgd", loss="mse")
    report = gk.diagnose(model, x, y)
    assert kinds(report) == {"zero_gradient"}
    assert report.measures["gradient_norm"] == 0.0


@pytest.mark.backend_free
def test_saturation_that_explains_a_vanishing_gradient_is_its_evidence():
    layers = [
        activations.LayerActivation(
            f"act_{i}", "sigmoid", 16, None, 0.6 + 0.05 * i, False, True, f"dense_{i}"
        )
        for i in range(3)
    ]
    measured = activations.ActivationMeasures(layers, None, None, None, [])
    names = [f"dense_{i}" for i in range(4)]
    report = checks.assemble(None, names, [1e-6, 1e-4, 1e-2, 1.0], 1.0, activations=measured)
    assert report.kinds() == ["vanishing_across_depth"]  # one finding, not two unrelated rows
    vanishing = report.findings[0]
    assert vanishing.evidence == {"saturated_units": {"act_2": 0.7, "act_1": 0.65, "act_0": 0.6}}
    assert "`act_2` (70%)" in vanishing.advice and "saturated" in vanishing.advice
    assert report.to_dict()["findings"][0]["evidence"] == vanishing.evidence
    # Without the saturation, the same norms give the finding and its own advice.
    plain = checks.assemble(None, names, [1e-6, 1e-4, 1e-2, 1.0], 1.0)
    assert plain.kinds() == ["vanishing_across_depth"] and not plain.findings[0].evidence


def test_autoclip_at_its_percentile_is_not_frequent_clipping(tmp_path):
    x, y = data(0, n=64)
    model = mlp([keras.layers.Dense(8, "relu")], keras.layers.Dense(1), 0)
    optimizer = ClippedOptimizer(keras.optimizers.Adam(0.01), clipping.AutoClip(percentile=10))
    model.compile(optimizer=optimizer, loss="mse")
    board = gk.callbacks.GradientBoard(tmp_path, probe=(x[:16], y[:16]), write_plots=False)
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[board])
    assert max(history.history["clipped_fraction"]) > 0.5  # it clips most steps, by design
    assert "frequent_clipping" not in {f.kind for f in board.findings}


@pytest.mark.backend_free
def test_clipping_is_judged_against_the_policy():
    judge = checks._clip_binds
    assert not judge(0.9, 0.05, intended=0.9)  # AutoClip(10) at its intent
    assert not judge(0.99, 0.9, intended=0.9)  # more than intended, not dominant
    assert judge(0.99, 0.05, intended=0.9)
    assert not judge(0.8, 0.3, intended=None)  # binds often, shrinks by a small factor
    assert judge(0.8, 0.05, intended=None)  # dominates the step


# ----------------------------------------------------------- where users look
def _all_advice(layers=(None,), stacks=([],)):
    texts = [
        advice.time_advice(k, layer, init)
        for k in ("vanishing_through_time", "exploding_through_time")
        for init in (True, False)
        for layer in layers
    ]
    texts += [
        advice.depth_advice(k, None, stack)
        for k in ("vanishing_across_depth", "exploding_across_depth")
        for stack in stacks
    ]
    texts += [advice.non_finite_advice(w, i) for w in ("input", "dense") for i in (True, False)]
    texts += list(advice.TRAINING_ADVICE.values())
    texts += [
        advice.dead_units_advice({"d": ("relu", 0.5)}),
        advice.saturated_units_advice({"d": ("tanh", 0.7)}),
        advice.non_finite_forward_advice("d", "exponential", "RandomNormal", True),
        advice.non_finite_forward_advice("d", "exponential", "RandomNormal", False),
        advice.mismatch_advice("m"),
        advice.unscaled_advice("x", 1e4, 0, False),
        advice.unscaled_advice("targets", 1e4, 0, True),
        advice.zero_gradient_advice(["d"], None),
        advice.unchanged_advice(["d"], 4),
        advice.loss_advice(0.001, 3),
    ]
    return texts


def _slug(heading):
    """MkDocs's `toc` anchor of a heading."""
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"[\s]+", "-", text).strip("-")


def test_advice_links_are_pages_and_anchors_of_the_site():
    # Real layers, since the advice reads their classes (Keras's recurrent
    # layers make a seed variable: not backend-free).
    layers = [None, keras.layers.LSTM(2), keras.layers.GRU(2), gk.layers.IndRNN(2)]
    layers.append(keras.layers.SimpleRNN(2))
    stacks = [[], [gk.layers.IndRNN(2), gk.layers.IndRNN(2), keras.layers.Dense(1)]]
    site = re.search(r"^site_url:\s*(\S+)", (REPO / "mkdocs.yml").read_text(), re.M).group(1)
    assert site == advice.SITE_URL
    texts = _all_advice(layers, stacks)
    urls = {u for text in texts for u in re.findall(r"\((https?://[^\s()]+)\)", text)}
    assert len(urls) >= 15
    for url in urls:
        assert url.startswith(site), url
        page, _, anchor = url[len(site) :].partition("#")
        path = REPO / "docs" / (page.rstrip("/") + ".md")
        assert path.exists(), url
        headings = re.findall(r"^#+\s+(.+)$", path.read_text(), re.M)
        assert anchor in {_slug(h) for h in headings}, url
    # Every section the advice module names is among the links produced.
    source = Path(advice.__file__).read_text()
    written = set(re.findall(r"_link\(\s*[\"'](guides/\w+)\.md#([\w-]+)", source))
    written |= {("guides/diagnosing", a) for a in re.findall(r"GUIDE \+ '#([\w-]+)'", source)}
    produced = {tuple(u[len(site) :].rstrip("/").split("/#")) for u in urls}
    assert written and written <= produced, sorted(written - produced)


@pytest.mark.backend_free
def test_the_report_renders_on_the_text_dashboard():
    from tensorboard.plugins.text import text_plugin

    findings = [
        Finding(k, "lstm_1", 3e-5, 1e-3, text, {"saturated_units": {"dense_1": 0.62}})
        for k, text in zip(("vanishing_through_time", "frequent_clipping"), _all_advice())
    ]
    findings.append(Finding("zero_gradient", "dense_2", 0.0, 0.0, _all_advice()[-4]))
    html = text_plugin.text_array_to_html(
        np.array(Report(findings, {"gradient_norm": 2.0}).to_markdown().encode()), True
    )
    assert "<table" not in html  # a wide table breaks words mid-word at the default width
    visible = re.sub(r"<[^>]+>", "", html).replace("&lt;", "<").replace("&gt;", ">")
    visible = visible.replace("&amp;", "&")
    for f in findings:
        assert f"{f.kind} at {f.where}" in visible
        # The whole advice is shown, its `|u|` and underscores as written.
        prose = re.sub(r"\((https?://[^\s()]+)\)", "(guide)", f.advice).replace("`", "")
        assert prose in visible, prose
    assert "dense_1 0.62" in visible
    assert visible.count("guide") >= 2 and 'href="https://' in html


def test_a_gradient_warning_points_at_the_fit_call(tmp_path):
    x, y = data(0, n=16)
    model = mlp([keras.layers.Dense(8, "relu")], keras.layers.Dense(1), 0)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    board = gk.callbacks.GradientBoard(tmp_path, write_plots=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[board])  # the line
    ours = [w for w in caught if issubclass(w.category, GradientWarning)]
    assert ours
    for w in ours:
        assert w.filename == __file__
        assert "model.fit(" in Path(__file__).read_text().splitlines()[w.lineno - 1]

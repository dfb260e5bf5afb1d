"""A Keras cell used twice stays one library cell: TensorFlow's autoregressive ``FeedBack``
tutorial (``lstm_rnn = RNN(lstm_cell)``, then ``lstm_cell(x, states)`` in a loop) ported with
``xf.from_keras([lstm_rnn, lstm_cell])`` keeps Keras's 5 trainable tensors and trains alike."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL, require
from helpers import max_err

import rnn_xframework as xf

keras = pytest.importorskip("keras")

UNITS, FEATURES, STEPS, OUT_STEPS, BATCH = 6, 3, 5, 4, 2


class FeedBack(keras.Model):
    """The tutorial's model (tensorflow.org/tutorials/structured_data/time_series), float64."""

    def __init__(self) -> None:
        super().__init__(dtype="float64")
        self.lstm_cell = keras.layers.LSTMCell(UNITS, dtype="float64")
        self.lstm_rnn = keras.layers.RNN(self.lstm_cell, return_state=True, dtype="float64")
        self.dense = keras.layers.Dense(FEATURES, dtype="float64")

    def call(self, inputs, training=None):
        x, *state = self.lstm_rnn(inputs)
        prediction = self.dense(x)
        predictions = [prediction]
        for _ in range(1, OUT_STEPS):
            x, state = self.lstm_cell(prediction, states=state, training=training)
            prediction = self.dense(x)
            predictions.append(prediction)
        return keras.ops.stack(predictions, axis=1)


def keras_feedback(rng):
    model = FeedBack()
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    model(x)
    assert len(model.trainable_weights) == 5
    return model, x


def test_one_cell_for_both_uses(backend, rng):
    require(backend)
    model, _ = keras_feedback(rng)
    rnn, cell = xf.from_keras([model.lstm_rnn, model.lstm_cell], backend=backend)
    assert rnn.cells[0] is cell
    memo = {}  # across calls: the same dict keeps the tie
    rnn2 = xf.from_keras(model.lstm_rnn, backend=backend, shared=memo)
    assert xf.from_keras(model.lstm_cell, backend=backend, shared=memo) is rnn2.cells[0]
    assert xf.from_keras(model.lstm_cell, backend=backend) is not rnn2.cells[0]  # separate calls: separate copies


def test_feedback_ported_to_torch_trains_like_keras(rng):
    torch = pytest.importorskip("torch")
    import tensorflow as tf

    model, x = keras_feedback(rng)
    target = rng.normal(size=(BATCH, OUT_STEPS, FEATURES))
    lstm_rnn, lstm_cell = xf.from_keras([model.lstm_rnn, model.lstm_cell], backend="torch")

    class TorchFeedBack(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm_cell, self.lstm_rnn = lstm_cell, lstm_rnn
            self.dense = torch.nn.Linear(UNITS, FEATURES, dtype=torch.float64)
            kernel, bias = model.dense.get_weights()
            with torch.no_grad():
                self.dense.weight.copy_(torch.from_numpy(kernel.T)), self.dense.bias.copy_(torch.from_numpy(bias))

        def forward(self, inputs):
            x, states = self.lstm_rnn(inputs)  # the library's RNN: one list of states per layer
            state = states[0]
            prediction = self.dense(x)
            predictions = [prediction]
            for _ in range(1, OUT_STEPS):
                x, state = self.lstm_cell(prediction, state)
                prediction = self.dense(x)
                predictions.append(prediction)
            return torch.stack(predictions, 1)

    ported = TorchFeedBack()
    trainable = [p for p in ported.parameters() if p.requires_grad]
    assert len(trainable) == len(model.trainable_weights) == 5  # not 8: the cell is one
    lr = 0.25  # exact in float32 (Keras's learning-rate variable)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x) - target) ** 2)
    keras.optimizers.SGD(lr).apply(tape.gradient(loss, model.trainable_weights), model.trainable_weights)
    opt = torch.optim.SGD(trainable, lr=lr)
    torch_loss = ((ported(torch.from_numpy(x)) - torch.from_numpy(target)) ** 2).mean()
    opt.zero_grad()
    torch_loss.backward()
    opt.step()
    assert abs(float(torch_loss.detach()) - float(loss)) <= TOL["float64"]
    assert max_err(lstm_cell.get_weights()[0], model.lstm_cell.get_weights()[0]) <= TOL["float64"]
    assert all(
        max_err(a, b) <= TOL["float64"]
        for a, b in zip(lstm_rnn.get_weights(), model.lstm_cell.get_weights(), strict=True)
    )
    assert max_err(ported.dense.weight.detach().T, model.dense.get_weights()[0]) <= TOL["float64"]
    again = ported(torch.from_numpy(x)).detach().numpy()
    assert max_err(again, np.asarray(model(x))) <= TOL["float64"]

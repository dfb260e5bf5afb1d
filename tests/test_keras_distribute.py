"""The library's TensorFlow layers train under ``tf.distribute.MirroredStrategy``: two logical
CPU devices give the same weights as one replica on the whole batch.

Logical devices must be configured before TensorFlow initializes its runtime, which the test
process has already done, so the check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TOL

pytest.importorskip("tensorflow", reason="MirroredStrategy needs TensorFlow")

SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
from rnn_xframework import layers

rng = np.random.default_rng(7)
x = rng.normal(size=(8, 5, 3)).astype("float32")
y = rng.normal(size=(8, 2)).astype("float32")


def build():
    inp = keras.Input((5, 3))
    h = layers.LSTM(4, return_sequences=True, go_backwards=True, backend="tf")(inp)
    h = layers.GRU(3, return_sequences=True, backend="tf")(h)
    h = layers.SimpleRNN(2, activation="relu", backend="tf")(h)
    model = keras.Model(inp, h)
    weights = np.random.default_rng(3)
    model.set_weights([weights.uniform(-0.5, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def train(strategy):
    with strategy.scope():
        model = build()
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    return model


devices = [d.name for d in tf.config.list_logical_devices("CPU")]
mirrored = tf.distribute.MirroredStrategy(devices)
one = train(tf.distribute.OneDeviceStrategy(devices[0]))
two = train(mirrored)
start = build().get_weights()
print(json.dumps({
    "replicas": mirrored.num_replicas_in_sync,
    "devices": devices,
    "max_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(one.get_weights(), two.get_weights())),
    "moved": min(float(np.max(np.abs(a - b))) for a, b in zip(one.get_weights(), start)),
}))
"""


def test_mirrored_strategy_matches_one_replica(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(SCRIPT)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2, result
    assert result["moved"] > 1e-3, result  # every weight trained
    assert result["max_diff"] <= TOL["float32"], result

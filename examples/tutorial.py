"""The book's RNN chapter (Keras SimpleRNNCell tutorial), ported: same steps, backend by argument.

    python examples/tutorial.py --backend torch
    python examples/tutorial.py --backend tensorflow

Batch 4, 80 steps, 100 features, 64 units; state kept in a list; two cells stacked in the
tutorial's two orderings (timestep-major, then layer-major with ``middle_sequences``).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import rnn_xframework as xf
from rnn_xframework import layers  # the tutorial's `layers`, bound this time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torch", help="torch | tensorflow (tf) | numpy")
    args = parser.parse_args(argv)
    ops = xf.backends.get(args.backend)  # native tensors for this backend
    rng = np.random.default_rng(0)

    def tensor(shape: tuple[int, ...]) -> object:
        return ops.from_numpy(rng.normal(size=shape).astype("float32"))

    # A cell; its three weights: kernel (W_xh), recurrent_kernel (W_hh), bias (b).
    cell = layers.SimpleRNNCell(3, backend=args.backend)
    cell.build(input_shape=(None, 4))
    print("trainable variables:", [tuple(v.shape) for v in cell.trainable_variables])

    # One step: the state is wrapped in a list, on every backend.
    h0 = [ops.from_numpy(np.zeros((4, 64), "float32"))]
    x = tensor((4, 80, 100))  # 4 sentences of 80 words, 100 features each
    xt = ops.unstack(x)[0]  # the first word of every sentence
    cell = layers.SimpleRNNCell(64, backend=args.backend)
    out, h1 = cell(xt, h0)
    print("one step:", tuple(out.shape), tuple(h1[0].shape))

    # The whole sequence: loop over time (tf.unstack(x, axis=1) in the tutorial).
    h = h0
    for xt in ops.unstack(x):
        out, h = cell(xt, h)
    print("last output:", tuple(out.shape))

    # Two layers, timestep-major: each step goes through both cells.
    cell0 = layers.SimpleRNNCell(64, backend=args.backend)
    cell1 = layers.SimpleRNNCell(64, backend=args.backend)
    h0, h1 = cell0.get_initial_state(4), cell1.get_initial_state(4)
    for xt in ops.unstack(x):
        out0, h0 = cell0(xt, h0)
        out1, h1 = cell1(out0, h1)
    timestep_major = ops.to_numpy(out1)

    # Two layers, layer-major: the first layer over every step, keeping middle_sequences.
    h0, h1 = cell0.get_initial_state(4), cell1.get_initial_state(4)
    middle_sequences = []
    for xt in ops.unstack(x):
        out0, h0 = cell0(xt, h0)
        middle_sequences.append(out0)
    for xt in middle_sequences:
        out1, h1 = cell1(xt, h1)
    layer_major = ops.to_numpy(out1)
    print("orderings agree: max abs difference", float(np.abs(timestep_major - layer_major).max()))

    # The same network as one object, in either ordering.
    rnn = layers.RNN([cell0, cell1], order="layer")
    print("layers.RNN matches the loops:", bool(np.allclose(ops.to_numpy(rnn(x)), timestep_major, atol=1e-6)))


if __name__ == "__main__":
    main()

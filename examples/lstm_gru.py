"""The chapter's LSTM and GRU snippets, on the backend of your choice.

    python examples/lstm_gru.py --backend torch
    python examples/lstm_gru.py --backend tensorflow

Runs an LSTMCell and a GRUCell step by step over a sequence (the chapter's explicit loop), the
same thing with the LSTM/GRU layers stacked like keras.Sequential, and checks the numbers against
the NumPy reference after moving the weights there.
"""

from __future__ import annotations

import argparse

import numpy as np

import rnn_xframework as xf
from rnn_xframework import backends, layers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torch", choices=["torch", "tensorflow", "numpy"])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (for tests)")
    args = parser.parse_args(argv)
    batch, steps, features, units = (2, 5, 8, 4) if args.quick else (4, 80, 100, 64)
    ops = backends.get(args.backend)
    data = np.random.default_rng(0).normal(size=(batch, steps, features)).astype("float32")
    inputs = ops.from_numpy(data)

    # --- the chapter's loop over an LSTMCell: the state is [h, c] ---------------------------
    lstm_cell = layers.LSTMCell(units, backend=args.backend)
    state = lstm_cell.get_initial_state(batch_size=batch)
    for xt in ops.unstack(inputs):
        output, state = lstm_cell(xt, state, training=False)
    h, c = state
    print(f"LSTMCell: last output {tuple(ops.shape(output))}, h {tuple(ops.shape(h))}, c {tuple(ops.shape(c))}")

    # --- the same with a GRUCell: the state is [h] ---------------------------------------------
    gru_cell = layers.GRUCell(units, backend=args.backend)
    state = gru_cell.get_initial_state(batch_size=batch)
    for xt in ops.unstack(inputs):
        output, state = gru_cell(xt, state, training=False)
    print(f"GRUCell:  last output {tuple(ops.shape(output))}, state of {len(state)} tensor")

    # --- layers, stacked like keras.Sequential([LSTM(return_sequences=True), LSTM()]) --------
    for name in ("LSTM", "GRU"):
        cls = getattr(layers, name)
        stack = [cls(units, return_sequences=True, backend=args.backend), cls(units, backend=args.backend)]
        y = inputs
        for layer in stack:
            y = layer(y)
        # the NumPy reference with the same weights gives the same numbers
        y_ref = data
        for layer in stack:
            y_ref = xf.convert(layer, "numpy")(y_ref)
        err = float(np.abs(ops.to_numpy(y) - y_ref).max())
        print(f"{name} x2 (Sequential-style): output {tuple(ops.shape(y))}, max |{args.backend} - numpy| = {err:.1e}")
        assert err <= 1e-5, err


if __name__ == "__main__":
    main()

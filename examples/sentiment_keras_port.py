"""The chapter's sentiment classifier written in Keras, ported to PyTorch in one line.

The Keras model is the chapter's: an embedding, two ``SimpleRNN(32, dropout=0.5)`` layers and a
dense output. ``xf.to_torch(model, check=True)`` turns it into one ``torch.nn.Module`` and checks
it against Keras (forward, one SGD step); the Keras dropout (one mask per sequence) has no
``torch.nn`` form, so the two recurrent layers are the library's torch layers, the embedding and
the dense layer PyTorch's own. Then it trains in PyTorch on the synthetic reviews of
``sentiment_torch.py``.

    python examples/sentiment_keras_port.py            # ~30 s on 2 CPU cores
    python examples/sentiment_keras_port.py --quick    # a few steps (used by the tests)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sentiment_torch import VOCAB, make_reviews
from torch import nn

import rnn_xframework as xf
from rnn_xframework import frameworks

frameworks.load("tensorflow")  # triton before Keras loads TensorFlow, so torch.optim is safe (docs/cuda.md)


def keras_model(length: int, units: int = 32, embed: int = 32):
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((length,), dtype="int32"),
            keras.layers.Embedding(VOCAB, embed),
            keras.layers.SimpleRNN(units, dropout=0.5, return_sequences=True),
            keras.layers.SimpleRNN(units, dropout=0.5),
            keras.layers.Dense(1),
        ],
        name="sentiment_rnn",
    )


def sizes(doc: str, argv: list[str] | None) -> tuple[np.random.Generator, int, int, int]:
    """``(rng, length, steps, training reviews)`` from the command line (``--quick``: a few
    steps, for the tests), with torch and NumPy seeded."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps only (for tests)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    length, steps, n_train = (12, 5, 256) if args.quick else (20, 300, 4000)
    return np.random.default_rng(0), length, steps, n_train


def show_port(module: nn.Module) -> None:
    """Print what each child of the port is: PyTorch's own layer or the library's."""

    def name(m: nn.Module) -> str:
        where = type(m).__module__
        return (
            f"torch.nn.{type(m).__name__}"
            if where.startswith("torch.nn")
            else f"{where.split('.')[0]}.{type(m).__name__}"
        )

    print("ported:", ", ".join(f"{n}={name(m)}" for n, m in module.named_children()))


def train(module: nn.Module, x: np.ndarray, y: np.ndarray, steps: int, batch: int = 64) -> float:
    """``steps`` Adam steps on ``module`` (dropout on: ``module.train()``); returns the last loss."""
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(0)
    module.train()
    for _ in range(steps):
        idx = rng.choice(len(x), batch, replace=False)
        loss = loss_fn(module(torch.from_numpy(x[idx])).squeeze(-1), torch.from_numpy(y[idx]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def train_and_score(module: nn.Module, train_set: tuple, test_set: tuple, steps: int) -> float:
    """Train ``steps`` steps in PyTorch, print the loss and the test accuracy; return the accuracy."""
    loss = train(module, *train_set, steps)
    module.eval()
    x_test, y_test = test_set
    with torch.no_grad():
        accuracy = float(((module(torch.from_numpy(x_test)).squeeze(-1) > 0).numpy() == y_test).mean())
    print(f"trained {steps} steps in PyTorch: loss {loss:.3f}, test accuracy {accuracy:.3f} (chance 0.5)")
    return accuracy


def reviews(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    words, labels = make_reviews(rng, n, length)
    return words.astype("int32"), labels


def main(argv: list[str] | None = None) -> float:
    rng, length, steps, n_train = sizes(__doc__, argv)
    train_set, test_set = reviews(rng, n_train, length), reviews(rng, 500, length)
    model = keras_model(length)

    module = xf.to_torch(model, check=True)  # the port: one line, checked against Keras

    show_port(module)
    return train_and_score(module, train_set, test_set, steps)


if __name__ == "__main__":
    main()

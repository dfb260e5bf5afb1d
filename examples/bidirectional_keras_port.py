"""A Keras Bidirectional LSTM text classifier, ported to PyTorch in one line.

``Embedding(mask_zero=True) -> Bidirectional(LSTM(16)) -> Dense(1)``: ``xf.to_torch`` gives one
``torch.nn.Module`` of PyTorch's own layers only (``nn.Embedding``, ``nn.LSTM(bidirectional=True)``
over packed sequences for the mask, ``nn.Linear``), checked against Keras (forward and one SGD
step), then trained in PyTorch on the synthetic reviews of ``sentiment_torch.py``, padded to
different lengths. ``xf.to_torch_source`` writes the same module as ``model.py``.

    python examples/bidirectional_keras_port.py            # ~30 s on 2 CPU cores
    python examples/bidirectional_keras_port.py --quick    # a few steps (used by the tests)
"""

from __future__ import annotations

import tempfile

import numpy as np
from sentiment_keras_port import show_port, sizes, train_and_score
from sentiment_torch import VOCAB, make_reviews

import rnn_xframework as xf
from rnn_xframework import frameworks

frameworks.load("tensorflow")  # triton before Keras loads TensorFlow, so torch.optim is safe (docs/cuda.md)


def keras_model(length: int):
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((length,), dtype="int32"),
            keras.layers.Embedding(VOCAB, 16, mask_zero=True),
            keras.layers.Bidirectional(keras.layers.LSTM(16)),
            keras.layers.Dense(1),
        ],
        name="bidirectional_classifier",
    )


def padded_reviews(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Reviews of 4..length words, right-padded with 0 (the mask)."""
    words, labels = make_reviews(rng, n, length)
    for row, keep in enumerate(rng.integers(length // 2, length + 1, n)):
        words[row, keep:] = 0
    return words.astype("int32"), labels


def main(argv: list[str] | None = None) -> float:
    rng, length, steps, n_train = sizes(__doc__, argv)
    train_set, test_set = padded_reviews(rng, n_train, length), padded_reviews(rng, 500, length)
    model = keras_model(length)

    module = xf.to_torch(model, check=True)  # the port: one line, checked against Keras

    show_port(module)
    report = xf.compare(model, module, [test_set[0][:8]], steps=1, show=False)
    print(f"parity on padded reviews: {report.verdict()}")
    assert report.passed
    with tempfile.TemporaryDirectory() as out:
        py, _ = xf.to_torch_source(model, out)
        imports = [line for line in open(py).read().splitlines() if line.startswith(("import", "from"))]
        print(f"model.py imports: {imports}")
    return train_and_score(module, train_set, test_set, steps)


if __name__ == "__main__":
    main()

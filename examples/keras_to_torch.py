"""A Keras model trained with ``fit``, moved to PyTorch with ``xf.from_keras`` and fine-tuned there.

    python examples/keras_to_torch.py            # the full size
    python examples/keras_to_torch.py --quick    # small sizes (what the tests run)

The model is Embedding -> LSTM -> GRU -> Dense on a synthetic task (is the sequence's first
half heavier in small tokens than its second half?), generated in the script. The recurrent
layers come over with their settings and weights in one call; the embedding and the dense
layer are one array each and are copied by hand. Before fine-tuning, the PyTorch model's logits
must equal the Keras model's to 1e-5 (float32); the script asserts it.
"""

from __future__ import annotations

import argparse

import keras  # TensorFlow first, then torch: any order works (docs/cuda.md)
import numpy as np
import torch

import rnn_xframework as xf


def data(rng: np.random.Generator, n: int, steps: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    tokens = rng.integers(1, vocab, size=(n, steps))
    small = tokens < vocab // 2
    labels = (small[:, : steps // 2].sum(1) > small[:, steps // 2 :].sum(1)).astype("int64")
    return tokens.astype("int32"), labels


def keras_model(vocab: int, embed: int, units: int, steps: int) -> keras.Model:
    inp = keras.Input((steps,), dtype="int32")
    x = keras.layers.Embedding(vocab, embed, name="embedding")(inp)
    x = keras.layers.LSTM(units, return_sequences=True, go_backwards=True, name="lstm")(x)
    x = keras.layers.GRU(units, name="gru")(x)
    out = keras.layers.Dense(2, name="dense")(x)
    model = keras.Model(inp, out)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


class TorchModel(torch.nn.Module):
    """The same network in PyTorch: ``nn.Embedding``, the ported LSTM and GRU, ``nn.Linear``."""

    def __init__(self, model: keras.Model) -> None:
        super().__init__()
        rnns = xf.from_keras(model, backend="torch")  # {"lstm": RNN, "gru": RNN}, settings and weights
        self.lstm, self.gru = rnns["lstm"], rnns["gru"]
        table = keras.ops.convert_to_numpy(model.get_layer("embedding").embeddings)
        self.embedding = torch.nn.Embedding.from_pretrained(torch.from_numpy(table), freeze=False)
        dense = model.get_layer("dense")
        self.dense = torch.nn.Linear(*dense.kernel.shape)
        with torch.no_grad():  # Keras's kernel is (in, out), torch's weight (out, in)
            self.dense.weight.copy_(torch.from_numpy(keras.ops.convert_to_numpy(dense.kernel).T))
            self.dense.bias.copy_(torch.from_numpy(keras.ops.convert_to_numpy(dense.bias)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.dense(self.gru(self.lstm(self.embedding(tokens))))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (for tests)")
    args = parser.parse_args(argv)
    n, steps, vocab, embed, units, epochs = (64, 6, 12, 4, 5, 2) if args.quick else (2000, 20, 50, 16, 32, 4)
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    x_train, y_train = data(rng, n, steps, vocab)
    x_test, y_test = data(rng, n // 4, steps, vocab)

    # 1. Train in Keras.
    model = keras_model(vocab, embed, units, steps)
    history = model.fit(x_train, y_train, batch_size=32, epochs=epochs, verbose=0)
    print(f"keras: trained {epochs} epochs, final loss {history.history['loss'][-1]:.4f}")

    # 2. Port to PyTorch: the same logits.
    net = TorchModel(model)
    keras_logits = keras.ops.convert_to_numpy(model(x_test))
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(x_test).long())
    err = float(np.abs(torch_logits.numpy() - keras_logits).max())
    print(f"ported: max |torch - keras| logits = {err:.1e} (tolerance 1e-5)")
    assert err <= 1e-5, err

    # 3. Fine-tune in PyTorch; every parameter, the recurrent layers' included, is trained.
    tokens, labels = torch.from_numpy(x_train).long(), torch.from_numpy(y_train)
    test_tokens, test_labels = torch.from_numpy(x_test).long(), torch.from_numpy(y_test)
    before = accuracy(torch_logits, test_labels)
    weights_before = [w.copy() for w in net.lstm.get_weights()]
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(epochs):
        for start in range(0, n, 32):
            optimizer.zero_grad()
            loss = loss_fn(net(tokens[start : start + 32]), labels[start : start + 32])
            loss.backward()
            optimizer.step()
    moved = max(float(np.abs(a - b).max()) for a, b in zip(net.lstm.get_weights(), weights_before, strict=True))
    assert moved > 0, "fine-tuning did not change the LSTM's weights"
    with torch.no_grad():
        after = accuracy(net(test_tokens), test_labels)
    print(f"torch: fine-tuned {epochs} epochs, last loss {loss.item():.4f}, LSTM weights moved by up to {moved:.2e}")
    print(f"test accuracy: {before:.3f} after Keras training, {after:.3f} after fine-tuning in PyTorch")


if __name__ == "__main__":
    main()

"""A PyTorch checkpoint brought into Keras with ``xf.from_torch`` and saved as ``.keras``.

    python examples/torch_to_keras.py            # the full size
    python examples/torch_to_keras.py --quick    # small sizes (what the tests run)

Part 1 trains a PyTorch model (``nn.Embedding -> nn.LSTM -> nn.GRU -> nn.Linear``, PyTorch's
default time-major layout for the LSTM) on a synthetic task generated in the script and saves
its ``state_dict``, as any PyTorch project does. Part 2 starts from that file and the modules'
constructor arguments only: ``xf.from_torch(nn.LSTM(**args), state_dict=sd, prefix="lstm.",
backend="tensorflow")`` gives the library's TensorFlow RNN with the checkpoint's weights,
``xf.to_keras`` a native ``keras.layers.LSTM`` / ``GRU`` with the same configuration and weights,
and the Keras model is saved as ``.keras`` and loaded back with ``keras.saving.load_model``, which
needs no part of this library. The Keras logits must equal PyTorch's to 1e-5 (float32); the
script asserts it.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import keras  # TensorFlow first, then torch: any order works (docs/cuda.md)
import numpy as np
import torch

import rnn_xframework as xf


def data(rng: np.random.Generator, n: int, steps: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens ``[n, steps]`` and labels: is the first half heavier in small tokens than the second?"""
    tokens = rng.integers(1, vocab, size=(n, steps))
    small = tokens < vocab // 2
    labels = (small[:, : steps // 2].sum(1) > small[:, steps // 2 :].sum(1)).astype("int64")
    return tokens.astype("int64"), labels


def constructor_args(vocab: int, embed: int, units: int) -> dict[str, dict]:
    """What a PyTorch project keeps next to its checkpoint: each module's constructor arguments."""
    return {
        "embedding": {"num_embeddings": vocab, "embedding_dim": embed},
        "lstm": {"input_size": embed, "hidden_size": units},  # batch_first=False: PyTorch's default
        "gru": {"input_size": units, "hidden_size": units, "batch_first": True},
        "head": {"in_features": units, "out_features": 2},
    }


class Classifier(torch.nn.Module):
    def __init__(self, args: dict[str, dict]) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(**args["embedding"])
        self.lstm = torch.nn.LSTM(**args["lstm"])
        self.gru = torch.nn.GRU(**args["gru"])
        self.head = torch.nn.Linear(**args["head"])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens)  # [batch, time, embed]
        x, _ = self.lstm(x.transpose(0, 1))  # time-major in and out
        x, _ = self.gru(x.transpose(0, 1))  # batch-first
        return self.head(x[:, -1])


def train_and_save(args: dict[str, dict], tokens: np.ndarray, labels: np.ndarray, epochs: int, path: str) -> None:
    """Part 1: an ordinary PyTorch training run that ends with ``torch.save(state_dict)``."""
    torch.manual_seed(0)
    model = Classifier(args)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.from_numpy(tokens), torch.from_numpy(labels)
    for epoch in range(epochs):
        for i in range(0, len(x), 32):
            loss = torch.nn.functional.cross_entropy(model(x[i : i + 32]), y[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"torch epoch {epoch + 1}: loss {loss.item():.4f}")
    torch.save(model.state_dict(), path)


def keras_model(args: dict[str, dict], sd: dict[str, torch.Tensor], steps: int) -> keras.Model:
    """Part 2: the Keras model from the checkpoint and the constructor arguments alone."""
    # The nn.LSTM is time-major (batch_first=False), so xf.from_torch gives a time_major RNN by
    # default; Keras layers are batch-major, and the layout moves the time axis, not the numbers:
    # ask for time_major=False.
    lstm = xf.from_torch(
        torch.nn.LSTM(**args["lstm"]), state_dict=sd, prefix="lstm.", backend="tensorflow", time_major=False
    )
    gru = xf.from_torch(
        torch.nn.GRU(**args["gru"]), state_dict=sd, prefix="gru.", backend="tensorflow", return_sequences=False
    )
    print(f"ported from the checkpoint: {len(lstm.cells)} LSTM layer, {len(gru.cells)} GRU layer")
    inp = keras.Input((steps,), dtype="int32")
    embedding = keras.layers.Embedding(args["embedding"]["num_embeddings"], args["embedding"]["embedding_dim"])
    x = embedding(inp)
    x = xf.to_keras(lstm)(x)  # keras.layers.LSTM(return_sequences=True), the checkpoint's weights
    x = xf.to_keras(gru)(x)  # keras.layers.GRU(reset_after=True)
    head = keras.layers.Dense(args["head"]["out_features"])
    out = head(x)
    embedding.set_weights([sd["embedding.weight"].numpy()])
    head.set_weights([sd["head.weight"].numpy().T, sd["head.bias"].numpy()])  # torch (out, in) -> Keras (in, out)
    return keras.Model(inp, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one epoch (for the tests)")
    opts = parser.parse_args()
    n, steps, vocab, embed, units, epochs = (64, 10, 20, 8, 12, 1) if opts.quick else (2048, 40, 100, 32, 64, 5)
    rng = np.random.default_rng(0)
    tokens, labels = data(rng, n, steps, vocab)
    args = constructor_args(vocab, embed, units)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = os.path.join(tmp, "classifier.pt")
        train_and_save(args, tokens, labels, epochs, checkpoint)

        sd = torch.load(checkpoint, weights_only=True)
        model = keras_model(args, sd, steps)
        path = os.path.join(tmp, "classifier.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)  # plain Keras layers: no custom objects needed
        kinds = [type(layer).__name__ for layer in loaded.layers]
        print("saved and loaded", os.path.basename(path), "with layers", kinds)

        reference = Classifier(args)
        reference.load_state_dict(sd)
        with torch.no_grad():
            want = reference(torch.from_numpy(tokens)).numpy()
        got = keras.ops.convert_to_numpy(loaded(tokens.astype("int32")))
        err = float(np.max(np.abs(got - want)))
        print(f"ported: max |keras - torch| logits {err:.2e} (tolerance 1e-5)")
        assert err <= 1e-5, err
        accuracy = float(np.mean(got.argmax(1) == labels))
        print(f"keras model accuracy on the training data {accuracy:.3f} (chance 0.5)")


if __name__ == "__main__":
    main()

"""The chapter's sentiment classifier, ported to PyTorch with the library's cells.

An embedding, two ``SimpleRNNCell(units, dropout=0.5)`` called step by step as
``cell(x, state)`` (dropout on in ``model.train()``, off in ``model.eval()``, as every PyTorch
module), and a dense output, trained on a synthetic review dataset made
here (no downloads): each review is a sequence of word ids, mostly neutral, with a few
"positive" or "negative" words; the label is the majority sentiment.

    python examples/sentiment_torch.py            # ~20 s on 2 CPU cores, ~0.93 test accuracy
    python examples/sentiment_torch.py --quick    # a few steps (used by the tests)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from rnn_xframework import layers

VOCAB, POSITIVE, NEGATIVE = 500, range(1, 26), range(26, 51)  # 0 is padding


def make_reviews(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` reviews of ``length`` word ids and their labels (1 = positive)."""
    labels = rng.integers(0, 2, n)
    words = rng.integers(51, VOCAB, (n, length))  # neutral words
    for i, label in enumerate(labels):
        k = rng.integers(3, 7)  # sentiment words in this review
        majority = rng.integers(k // 2 + 1, k + 1)
        pos = majority if label == 1 else k - majority
        sentiment = np.r_[rng.choice(list(POSITIVE), pos), rng.choice(list(NEGATIVE), k - pos)]
        words[i, rng.choice(length, k, replace=False)] = sentiment
    return words, labels.astype("float32")


class SentimentRNN(nn.Module):
    """Embedding -> SimpleRNNCell -> SimpleRNNCell -> Dense(1), looped over time by hand."""

    def __init__(self, units: int = 32, embed: int = 32) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, embed)
        self.cell1 = layers.SimpleRNNCell(units, dropout=0.5, backend="torch")
        self.cell2 = layers.SimpleRNNCell(units, dropout=0.5, backend="torch")
        self.cell1.build((None, embed))
        self.cell2.build((None, units))
        self.dense = nn.Linear(units, 1)

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        for cell in (self.cell1, self.cell2):  # one dropout mask per batch of sequences, as Keras
            cell.reset_dropout_mask()
        x = self.embedding(words)
        state1 = self.cell1.get_initial_state(words.shape[0])
        state2 = self.cell2.get_initial_state(words.shape[0])
        for t in range(words.shape[1]):
            out1, state1 = self.cell1(x[:, t], state1)  # dropout follows model.train() / model.eval()
            out2, state2 = self.cell2(out1, state2)
        return self.dense(out2).squeeze(-1)  # logits


def accuracy(model: SentimentRNN, words: np.ndarray, labels: np.ndarray) -> float:
    model.eval()  # no dropout, as for any PyTorch module
    with torch.no_grad():
        logits = model(torch.from_numpy(words))
    return float(((logits > 0).numpy() == labels.astype(bool)).mean())


def main(argv: list[str] | None = None) -> float:
    from rich.progress import Progress

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps only (for tests)")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n_train, length, epochs, batch = (256, 12, 1, 64) if args.quick else (4000, 20, args.epochs, 64)
    x_train, y_train = make_reviews(rng, n_train, length)
    x_test, y_test = make_reviews(rng, 1000, length)
    model = SentimentRNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    start = time.perf_counter()
    steps = epochs * (n_train // batch)
    with Progress() as progress:
        task = progress.add_task("training", total=steps)
        for _ in range(epochs):
            order = rng.permutation(n_train)
            for i in range(0, n_train - batch + 1, batch):
                idx = order[i : i + batch]
                model.train()
                logits = model(torch.from_numpy(x_train[idx]))
                loss = loss_fn(logits, torch.from_numpy(y_train[idx]))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                progress.update(task, advance=1, description=f"training  loss {loss.item():.3f}")
    acc = accuracy(model, x_test, y_test)
    print(f"test accuracy {acc:.3f} (chance 0.5) after {steps} steps in {time.perf_counter() - start:.1f} s")
    return acc


if __name__ == "__main__":
    main()

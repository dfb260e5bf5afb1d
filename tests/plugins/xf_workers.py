"""A ``torch.utils.data.Dataset`` holding a library cell, for the DataLoader-worker round trip
of tests/test_pickle.py: with the ``spawn`` start method each worker gets the dataset, cell
included, by pickle."""

from __future__ import annotations

from typing import Any

import torch


class CellOutputs(torch.utils.data.Dataset):
    """Item ``i``: the cell's output for ``x[i]`` from zero states, ``[units]``."""

    def __init__(self, cell: Any, x: torch.Tensor) -> None:
        self.cell, self.x = cell, x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        with torch.no_grad():
            y, _ = self.cell(self.x[i : i + 1], self.cell.get_initial_state(batch_size=1))
        return y[0]

"""A torch model holding the library's layers trains under ``DistributedDataParallel``: two CPU
processes (gloo, loopback) on half a batch each end with the weights one process gets on the
whole batch. Lazily built layers take PyTorch's dry run before wrapping, as ``nn.LazyLinear`` does."""

import os
import socket

import pytest
from conftest import TOL

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

STEPS = 3
BATCH = 8


def make_model(kind: str, lazy: bool):
    from rnn_xframework import layers

    torch.manual_seed(0)
    size = {} if lazy else {"input_size": 3}
    rnn = layers.RNN(
        [
            getattr(layers, kind)(5, backend="torch", dtype="float64", **size),
            getattr(layers, kind)(4, backend="torch", dtype="float64"),
        ],
        return_sequences=False,
    )
    model = torch.nn.Sequential(rnn, torch.nn.Linear(4, 1, dtype=torch.float64))
    if lazy:
        model(torch.zeros(1, 2, 3, dtype=torch.float64))  # the dry run lazy modules need before DDP
    return model


def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 6, 3, generator=g, dtype=torch.float64), torch.randn(
        BATCH, 1, generator=g, dtype=torch.float64
    )


def train(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    for _ in range(STEPS):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def worker(rank: int, world: int, port: int, kind: str, lazy: bool, out: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = torch.nn.parallel.DistributedDataParallel(make_model(kind, lazy))
        x, y = data()
        half = BATCH // world
        train(model, x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half])
        torch.save(model.module.state_dict(), f"{out}/rank{rank}.pt")
        dist.barrier()  # no rank tears gloo down while the other still talks to it (SIGABRT, 2 in 8 runs)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("kind", "lazy"), [("LSTMCell", True), ("GRUCell", False)], ids=["lazy", "input_size"])
def test_ddp_on_two_processes_matches_one_process(kind, lazy, tmp_path):
    torch.multiprocessing.spawn(worker, args=(2, free_port(), kind, lazy, str(tmp_path)), nprocs=2, join=True)
    single = make_model(kind, lazy)
    initial = {k: v.clone() for k, v in single.state_dict().items()}
    train(single, *data())
    want = single.state_dict()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert set(got) == set(want)
        for key, value in want.items():
            assert float((got[key] - value).abs().max()) <= TOL["float64"], key
    moved = [k for k in want if not torch.equal(want[k], initial[k])]
    assert any(".cells.0." in k for k in moved) and any(".cells.1." in k for k in moved)  # the RNN trained

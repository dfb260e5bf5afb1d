"""Triton kernels for the recurrent layers of the torch backend (device code only; the host code,
launches and autograd, is :mod:`rnn_xframework.backends.torch.compile.triton`).

* :mod:`.common`: the cell codes and device helpers the three kernel files share.
* :mod:`.persistent`: one layer, the whole time loop in one launch, weights on chip.
* :mod:`.split`: one layer too wide for one program, its weight columns split across programs.
* :mod:`.two_layer`: a small two-layer stack in one launch (inference).

Importing this package imports nothing; its modules import triton.
"""

"""The torch compile methods of :func:`rnn_xframework.compile`, one module each (``TorchBackend.compile_methods``
names them): :mod:`.torchscript`, :mod:`.inductor`, :mod:`.cudagraph`, :mod:`.triton` (the host code of
:mod:`rnn_xframework.kernels.triton`), on the TorchScript-ready loops of :mod:`.script_loops`, the hand-written
backward of :mod:`.bptt` and torch's compiled object :mod:`.compiled_module`."""

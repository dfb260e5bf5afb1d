"""Device code: GPU kernels, one package per kernel language. Imported only by the backend whose
host code launches them (:mod:`rnn_xframework.backends.torch.compile.triton`); nothing here is
imported by the core."""

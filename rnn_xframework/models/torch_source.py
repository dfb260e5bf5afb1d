"""The source emitter: a :class:`~rnn_xframework.models.torch_code.Code` -> ``model.py`` (a class
named after the model with ``__init__`` and ``forward`` written out, the helpers of
:mod:`~rnn_xframework.models.torch_ops` it calls copied in, and ``load(path=None)``) and
``model.pt`` (its ``state_dict``). The lines are the ones the live module runs. Where every
layer is PyTorch's own, the file imports only torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from rnn_xframework.models import torch_ops
from rnn_xframework.models.torch_code import Code

LOAD = '''

def load(path: str | Path | None = None) -> {name}:
    """The model with its weights: ``path`` (default: ``model.pt`` beside this file)."""
    model = {name}()
    weights = Path(__file__).with_name("model.pt") if path is None else Path(path)
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model
'''


def text(code: Code) -> str:
    """The whole ``model.py``."""
    native = all(code.native.values())
    how = "PyTorch's own layers only" if native else "PyTorch's layers and the library's torch layers"
    doc = (
        f'"""{code.name}, ported from Keras by rnn_xframework ({how}).\n\n'
        "    model = load()        # the module with its weights (model.pt beside this file)\n"
        '    y = model(*inputs)    # the Keras model\'s inputs, batch-major\n"""\n'
    )
    body = code.methods()
    typing = [n for n in ("List", "Optional", "Tuple") if f"{n}[" in body + torch_ops.source_of(code.helpers)]
    imports = ["from __future__ import annotations", "", "from pathlib import Path"]
    if typing:
        imports.append(f"from typing import {', '.join(typing)}  # noqa: UP035 (TorchScript reads these)")
    imports += ["", "import torch"]
    if code.uses_functional or "pad_same" in code.helpers:
        imports.append("import torch.nn.functional as F")
    if code.helpers & {"pack", "unpack"}:
        imports.append("from torch import Tensor, nn")
        imports.append("from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence")
    elif code.helpers:
        imports.append("from torch import Tensor, nn")
    else:
        imports.append("from torch import nn")
    if code.uses_library:
        imports += ["", "from rnn_xframework import layers"]
    helpers = torch_ops.source_of(code.helpers)
    parts = [doc, "\n".join(imports), ""]
    if helpers:
        parts += ["", helpers.rstrip(), ""]
    parts += ["", f"class {code.name}(nn.Module):", body.rstrip(), "", LOAD.format(name=code.name).rstrip()]
    return "\n".join(parts).rstrip() + "\n"


def write(code: Code, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``model.py`` and ``model.pt`` into ``directory`` (made if missing); each file is
    written under a temporary name and renamed, so a failure leaves no half-written file."""
    import torch

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    py, pt = out / "model.py", out / "model.pt"
    tmp_py, tmp_pt = out / f".model.py.tmp-{os.getpid()}", out / f".model.pt.tmp-{os.getpid()}"
    try:
        tmp_py.write_text(text(code))
        torch.save({k: torch.from_numpy(v.copy()) for k, v in code.state.items()}, tmp_pt)
        os.replace(tmp_pt, pt)
        os.replace(tmp_py, py)
    finally:
        for tmp in (tmp_py, tmp_pt):
            tmp.unlink(missing_ok=True)
    return py, pt

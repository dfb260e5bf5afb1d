"""The parity suite: does every backend compute the same numbers, forward, backward and in training?

Library API (the ``rnn-xframework parity`` command is a thin layer over it)::

    from rnn_xframework import parity
    report = parity.run(parity.Config(backends=["torch"], dtypes=["float64"]))
    parity.print_report(report)            # a table; report.passed, report.write_json(path)
    parity.check_golden("golden/")         # against vectors recorded with TensorFlow

Nothing here imports a framework until a backend is used. ``docs/parity.md`` describes the checks,
the tolerances and why they are what they are.
"""

from __future__ import annotations

from rnn_xframework.parity.golden import check_golden, golden_files, write_golden
from rnn_xframework.parity.matrix import CHECKS, Config, Plan, plan, run
from rnn_xframework.parity.problem import Problem, Sizes, build, random_problem
from rnn_xframework.parity.report import TOLERANCES, Report, Result, Tolerance, format_plain, print_report
from rnn_xframework.parity.training import Gradients, Optimizer, loss_and_grads, train_step

__all__ = [
    "CHECKS",
    "TOLERANCES",
    "Config",
    "Gradients",
    "Optimizer",
    "Plan",
    "Problem",
    "Report",
    "Result",
    "Sizes",
    "Tolerance",
    "build",
    "check_golden",
    "format_plain",
    "golden_files",
    "loss_and_grads",
    "plan",
    "print_report",
    "random_problem",
    "run",
    "train_step",
    "write_golden",
]

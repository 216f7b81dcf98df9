"""The cluster check (``tools/check_cluster.py``, ``make check-gpus``): before a long run, train,
evaluate and measure on the devices of this machine.

Parts: :mod:`.environment` (what runs), :mod:`.probes` (cross-process comparisons),
:mod:`.phases` (what each launched process runs), :mod:`.measure` (speed and memory of a paper
config), :mod:`.report` (verdicts, JSON, markdown, summary) and :mod:`.runner` (the parent).
The report format is documented in docs/CLUSTER_CHECK.md.
"""

from chimeraseg.d2.cluster_check.runner import CHECKS, RunOptions, run_cluster_check

__all__ = ["CHECKS", "RunOptions", "run_cluster_check"]

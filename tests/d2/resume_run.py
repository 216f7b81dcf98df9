"""tools/train_net.py with one thread per process and an optional point to stop at (test helper).

Run as a script by tests/d2/test_d2_exact_resume.py::

    python tests/d2/resume_run.py --datasets-root DIR [--freeze-after N --marker FILE] \\
        -- <train_net.py arguments>

With ``--freeze-after N``, rank 0 writes ``FILE`` after iteration ``N`` (its checkpoint, if any,
written) and then waits to be killed: the test sends SIGKILL to the whole process group, so the
kill lands at a known point of the run. Everything else is train_net's own ``main``, under
detectron2's ``launch`` (``--num-gpus 2`` spawns two gloo processes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # chimeraseg_test_utils

from chimeraseg_test_utils import load_script  # noqa: E402

_FREEZE_SECONDS = 600  # the test kills the process long before


def _rank_main(train_args: argparse.Namespace, own: argparse.Namespace) -> Any:
    """train_net's ``main`` in one process: one thread, datasets registered, optional freeze."""
    from detectron2.engine import HookBase
    from detectron2.utils import comm

    from chimeraseg.d2.data.register_synthetic_zs import register_all_synthetic_zs

    torch.set_num_threads(1)
    register_all_synthetic_zs(own.datasets_root, replace=True)
    tn = load_script("tools/train_net.py", "chimeraseg_train_net")

    class Freeze(HookBase):
        def after_step(self) -> None:
            if self.trainer.iter == own.freeze_after and comm.is_main_process():
                Path(own.marker).write_text(str(self.trainer.iter))
                time.sleep(_FREEZE_SECONDS)

    class FreezingTrainer(tn.ChimeraSegTrainer):
        def build_hooks(self) -> list[HookBase]:
            return [*super().build_hooks(), Freeze()]  # after the checkpointer

    if own.freeze_after is not None:
        tn.ChimeraSegTrainer = FreezingTrainer  # main() builds the trainer from this global
    return tn.main(train_args)


def main() -> None:
    """Parses this helper's options, then launches train_net's ``main`` on every process."""
    from detectron2.engine import default_argument_parser, launch

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets-root", required=True)
    parser.add_argument("--freeze-after", type=int, default=None)
    parser.add_argument("--marker", default="")
    split = sys.argv.index("--")
    own = parser.parse_args(sys.argv[1:split])
    train_args = default_argument_parser().parse_args(sys.argv[split + 1 :])
    launch(
        _rank_main,
        train_args.num_gpus,
        num_machines=1,
        machine_rank=0,
        dist_url="auto",
        args=(train_args, own),
    )


if __name__ == "__main__":
    main()

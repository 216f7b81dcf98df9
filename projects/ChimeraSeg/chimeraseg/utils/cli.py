"""One entry-point error handler for every tool: a refusal is one line, a bug is a traceback.

Every script in ``tools/`` ends with ``run_tool(main, "tools/<name>.py")``. A refusal (a bad
value, file, config, checkpoint or output that the code names in its message) prints
``tools/<name>.py: <message>`` as one line on stderr and exits with status 2, the status of a
command-line error. Anything else is unexpected and keeps its traceback. With
``CHIMERASEG_DEBUG=1`` refusals show their traceback too.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["DEBUG_ENV", "REFUSAL_STATUS", "one_line", "refusal_types", "run_tool"]

DEBUG_ENV = "CHIMERASEG_DEBUG"  # "1": refusals show their traceback
REFUSAL_STATUS = 2  # exit status of a refusal (argparse's status for a bad command line)


def refusal_types() -> tuple[type[BaseException], ...]:
    """The exceptions that are refusals with a message for the user, not bugs.

    ``ValueError`` (bad values: the project's config, dataset, export, output and input errors
    derive from it), ``OSError`` (files that are missing or cannot be written), ``KeyError``
    (unknown config keys and split names) and the ``RuntimeError`` subclasses that refuse a
    checkpoint or the world CLIP cache.
    """
    from chimeraseg.utils.checkpoint_io import CheckpointError

    types: list[type[BaseException]] = [ValueError, OSError, KeyError, CheckpointError]
    try:  # the world CLIP's errors; its module imports open_clip, which a tool may lack
        from chimeraseg.world.cache import WorldClipCacheError
        from chimeraseg.world.clip_training import WorldClipQualityError
    except ImportError:
        pass
    else:
        types += [WorldClipCacheError, WorldClipQualityError]
    return tuple(types)


def one_line(error: BaseException | str) -> str:
    """The message of ``error`` on one line (a ``KeyError``'s without its quotes)."""
    if isinstance(error, KeyError) and len(error.args) == 1:
        text = str(error.args[0])
    else:
        text = str(error) or type(error).__name__
    return re.sub(r"\s*\n\s*", " ", text).strip()


def _refuse(tool: str, message: str) -> NoReturn:
    prefix = f"{tool}: "
    print(message if message.startswith(prefix) else prefix + message, file=sys.stderr)
    sys.exit(REFUSAL_STATUS)


def run_tool(main: Callable[[], Any], tool: str) -> None:
    """Runs a tool's ``main`` and turns its refusals into one line and exit status 2.

    Args:
        main: The tool's entry point, called without arguments (it parses ``sys.argv``). An int
            it returns is the exit status; other return values are ignored.
        tool: The tool's name for messages, e.g. ``"tools/demo.py"``.

    Raises:
        SystemExit: always (the tool's exit status).
    """
    debug = os.environ.get(DEBUG_ENV) == "1"
    try:
        result = main()
    except SystemExit as e:  # a tool's own one-line refusal: same line, same status as ours
        if e.code is None or isinstance(e.code, int):
            raise
        _refuse(tool, one_line(str(e.code)))
    except refusal_types() as e:
        if debug:
            traceback.print_exc()
        _refuse(tool, one_line(e))
    sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)

"""The ``facediff`` command line: a thin shell over ``facediff.api``.

Every user mistake becomes one line on stderr (``error: ...``) and exit code 2 — never a traceback. The
commands live in ``cli/data.py``, ``cli/train.py``, ``cli/generate.py``, ``cli/evaluate.py`` and ``cli/ui.py``; importing them
registers them on ``app`` (``cli/common.py``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from facediff.cli import data, evaluate, generate, train, ui  # noqa: F401  (registers the commands)
from facediff.cli.common import app
from facediff.errors import FacediffError

__all__ = ["app", "main"]


def _close_process_group() -> None:
    """Under torchrun / accelerate launch: leave the process group cleanly (gloo can hang at interpreter exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main() -> None:
    try:
        app()
    except FacediffError as e:  # raised outside a command (e.g. while parsing)
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except Exception as e:  # a bug, not a user mistake: one line here, the traceback in a log file
        import tempfile
        import traceback

        log = Path(tempfile.gettempdir()) / "facediff-crash.log"
        log.write_text(traceback.format_exc())
        typer.echo(f"error: unexpected {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''} "
                   f"(full traceback in {log}; please report it)", err=True)
        sys.exit(1)
    finally:
        _close_process_group()


if __name__ == "__main__":
    main()

"""What every command module of the CLI shares: the typer apps, one-line user errors, the choice enums, the
help texts used by several commands, and the request-from-options rule of `sample` / `compose` / `panorama`.

Help is click's plain formatter (``rich_markup_mode=None``): it wraps option help under the option at any
terminal width, where rich's table squeezed it into a narrow strip and cut option names at 80 columns.
"""
from __future__ import annotations

import enum
import errno
import functools
import sys
from pathlib import Path
from typing import Any, Callable

import typer

from facediff import registry
from facediff.errors import FacediffError


def _choices(name: str, values: tuple[str, ...]) -> type[enum.Enum]:
    """A str Enum of registry choices: typer validates the value and lists the choices in --help."""
    return enum.Enum(name, {v: v for v in values}, type=str)


Sampler = _choices("Sampler", registry.SAMPLERS)
WindowWeights = _choices("WindowWeights", registry.WINDOW_WEIGHTS)
InitNoise = _choices("InitNoise", registry.INIT_NOISE)
Precision = _choices("Precision", registry.SAMPLING_PRECISION)
TrainPrecision = _choices("TrainPrecision", registry.MIXED_PRECISION)
Style = _choices("Style", registry.SYNTH_STYLES)
SynthLayout = _choices("SynthLayout", registry.SYNTH_LAYOUTS)
Source = _choices("Source", registry.SOURCES)
SketchMethod = _choices("SketchMethod", registry.SKETCH_METHODS)
AEKind = _choices("AEKind", registry.AE_KINDS)

DEVICE_HELP = "where the network runs: auto (the GPU when torch sees one, else cpu), cpu, cuda, cuda:N"
PRECISION_HELP = ("the network's precision: no = fp32 (the same images on every machine), bf16, "
                  "auto = bf16 where measured faster here")
OVERWRITE_HELP = "replace output files that exist (without it, an existing file is an error)"
SCALE_HELP = ("enlarge the saved images N times, nearest neighbour (pixel-art style); "
              "1 = the size asked for")
SAVE_EACH_HELP = "also write one PNG per image into this folder, each with its own seed in its settings"
FROM_PNG_HELP = ("re-run the settings saved in a facediff PNG; options given beside it override single "
                 "settings (e.g. --seed 7)")


class _OneLineErrors(typer.core.TyperGroup):
    """Usage errors (an unknown option, a value outside the choices) as one line on stderr, exit code 2."""

    def main(self, *args, **kwargs):
        kwargs.pop("standalone_mode", None)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as e:  # typer's (vendored click) usage errors: public base class only
            ctx = getattr(e, "ctx", None)
            if type(e).__name__ == "NoArgsIsHelpError":  # a bare group: show its help
                typer.echo(ctx.get_help() if ctx else str(e))
                sys.exit(0)
            where = f"{ctx.command_path}: " if ctx is not None else ""
            message = e.format_message() if hasattr(e, "format_message") else str(e)
            typer.echo(f"error: {where}{' '.join(message.split())}", err=True)
            sys.exit(2)
        if isinstance(rv, int) and rv:  # typer.Exit(code) inside a command, returned in this mode
            sys.exit(rv)
        return rv


def _typer(**kwargs: Any) -> typer.Typer:
    return typer.Typer(no_args_is_help=True, rich_markup_mode=None, **kwargs)


app = _typer(cls=_OneLineErrors, add_completion=False, pretty_exceptions_enable=False,
             help="Train, sample, compose and evaluate diffusion models that generate faces.")
data_app = _typer(help="Make SynthFaces, prepare real data sets, inspect them.")
train_app = _typer(help="Train models into a run directory.")
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")


def user_errors(fn: Callable) -> Callable:
    """Turn FacediffError (and a missing file) into one line on stderr with exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FacediffError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        except OSError as e:  # writing an output: full disk, read-only or missing folder, no permission
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            if e.filename is None and not full:
                raise
            what = "the disk is full" if full else e.strerror
            where = f"cannot write {e.filename}" if e.filename else "cannot write the outputs"
            typer.echo(f"error: {where}: {what}; free space (or choose another --out) and run again", err=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)

    return wrapper


def request_fields(ctx: typer.Context, values: dict[str, Any], from_png: Path | None,
                   aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``Request`` fields of a command's options. A new request takes every option that is set; with
    ``--from-png`` only the options given on the command line, which override the saved settings.
    ``aliases``: request field -> option name where they differ."""
    fields = {}
    for name, value in values.items():
        source = ctx.get_parameter_source((aliases or {}).get(name, name))  # typer's own click: by name
        given = source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
        if from_png is not None and not given:
            continue
        if value is None and not given:
            continue
        fields[name] = value.value if isinstance(value, enum.Enum) else value
    return fields


def say_notes(res: dict) -> None:
    """What the run filled in or found changed (e.g. the model's weights since the PNG was made)."""
    for note in res.get("notes", []):
        typer.echo(f"note: {note}", err=True)


def precision_note(res: dict) -> str:
    return " (network in bf16)" if res.get("precision") == "bf16" else ""

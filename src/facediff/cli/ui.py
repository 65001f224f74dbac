"""`facediff ui`: the web UI (gradio), bound to 127.0.0.1 unless --host says otherwise."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from facediff.cli.common import app, user_errors
from facediff.errors import FacediffError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def read_auth(auth: Optional[str], auth_file: Optional[Path]) -> list[tuple[str, str]] | None:
    """`--auth user:password` and / or `--auth-file FILE` (one user:password per line) -> gradio's auth list."""
    lines = [auth] if auth else []
    if auth_file is not None:
        if not auth_file.is_file():
            raise FacediffError(f"--auth-file {auth_file}: no such file")
        lines += [x.strip() for x in auth_file.read_text().splitlines() if x.strip() and not x.startswith("#")]
    pairs = []
    for line in lines:
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise FacediffError("--auth: give user:password (both non-empty)")
        pairs.append((user, password))
    return pairs or None


def host_warning(host: str, has_auth: bool) -> str | None:
    """The warning printed when the UI is bound to anything but the local machine."""
    if host in LOCAL_HOSTS:
        return None
    return (f"warning: --host {host} makes the UI reachable from other machines"
            + ("" if has_auth else "; anyone who can reach it can use it (add --auth)"))


@app.command("ui")
@user_errors
def ui(model: Optional[Path] = typer.Option(None, help="a model folder to offer first (besides the bundled ones)"),
       models_dir: Optional[Path] = typer.Option(None, help="offer every run / export folder under this one; the "
                                                 "Evaluate tab opens run and eval folders from it"),
       host: str = typer.Option("127.0.0.1", help="address to bind; anything but 127.0.0.1 exposes the UI to "
                                "the network"),
       port: int = typer.Option(7860, help="port to listen on"),
       out_dir: Optional[Path] = typer.Option(None, help="where generated PNGs are saved (default: a facediff-ui "
                                              "folder in the temp dir)"),
       auth: Optional[str] = typer.Option(None, help="user:password required to open the page"),
       auth_file: Optional[Path] = typer.Option(None, help="file of user:password lines (a shared machine)"),
       max_images: int = typer.Option(16, help="images per click, at most"),
       max_steps: int = typer.Option(150, help="sampler steps, at most"),
       max_side: int = typer.Option(1024, help="compose / panorama canvas side in pixels, at most")):
    """Start the web UI in the browser.

    Generate, compose, sketch and evaluate in tabs.

    Binds 127.0.0.1 unless --host says otherwise."""
    from facediff.ui.app import launch
    from facediff.ui.limits import Limits

    if model is not None and not model.exists():
        raise FacediffError(f"--model {model}: no such folder")
    warning = host_warning(host, bool(auth or auth_file))
    if warning:
        typer.echo(warning, err=True)
    limits = Limits(max_images=max_images, max_steps=max_steps, max_side=max_side)
    _, url = launch(model=str(model) if model else None, models_dir=str(models_dir) if models_dir else None,
                    host=host, port=port, out_dir=str(out_dir) if out_dir else None,
                    auth=read_auth(auth, auth_file), limits=limits, block=False, quiet=True)
    typer.echo(f"facediff ui: {url} (Ctrl+C to stop)")
    import time

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        typer.echo("stopped")

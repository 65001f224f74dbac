"""One generation of the UI, without gradio: build the request from the form, check it against the limits, run
it in a worker thread, and stream what happens (steps, live previews of the denoised estimate, the result) so
that the page can show it — and stop it.

Stop is a per-session ``threading.Event`` that the pipeline's step callback checks after every step and turns
into ``pipe.interrupt`` (gradio's ``cancels=`` cannot stop a running Python function, gradio #7593): the run
ends within one step and returns the images made so far, which are saved like any others.
"""
from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facediff.errors import FacediffError
from facediff.request import Request
from facediff.ui.limits import Limits, check_request

HISTORY = 48  # images the session's gallery keeps (older ones stay on disk, in the output folder)


class Session:
    """One browser session's state (``gr.State``): its Stop flag, last seed and gallery. gradio deep-copies a
    state's initial value for every new session; the copy of a Session is a fresh Session (own id, own flag)."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.stop = threading.Event()  # set by the Stop button; checked after every denoising step
        self.last_seed: int | None = None  # the seed of the last generation ("reuse last seed")
        self.gallery: list[str] = []  # PNG paths, newest first (at most HISTORY)
        self.running = False

    def __deepcopy__(self, memo) -> "Session":
        return Session()

    def folder(self, out_dir: str | Path) -> Path:
        return Path(out_dir) / f"session-{self.id}"

    def keep(self, paths: list[Path]) -> list[str]:
        self.gallery = [str(p) for p in paths] + self.gallery
        del self.gallery[HISTORY:]
        return list(self.gallery)


@dataclass
class Event:
    """What a running generation reports: ``kind`` step | preview | done | error."""

    kind: str
    done: int = 0  # steps finished
    total: int = 0  # steps in all
    image: np.ndarray | None = None  # preview: uint8 (H, W, 3) of the denoised estimate
    result: dict | None = None  # done: what ``api.sample`` / ``compose`` / ``panorama`` returned
    message: str = ""  # error: one line for the user


def preview_image(pipe, denoised) -> np.ndarray | None:
    """The first image of a denoised estimate (model space) as uint8 RGB."""
    import torch

    from facediff.imaging import to_uint8

    if denoised is None:
        return None
    with torch.no_grad():
        x = pipe.space.decode(denoised[:1].to(pipe.device)).float().clamp(-1, 1).cpu()
    return to_uint8(x)[0]


def stream(job: Callable[[Callable], dict], pipe, session: Session, *, preview_every: int = 5,
           timeout: float = 3600.0) -> Iterator[Event]:
    """Run ``job(callback_on_step_end)`` in a thread and yield its events until it ends. The callback stops the
    run (``pipe.interrupt``) once ``session.stop`` is set, and previews every ``preview_every`` steps."""
    events: queue.Queue[Event] = queue.Queue()
    session.stop.clear()

    def on_step(p, index: int, t, kwargs: dict) -> dict:
        if session.stop.is_set():
            p.interrupt = True
        done, total = index + 1, int(getattr(p, "num_timesteps", 0) or 0)
        image = None
        if preview_every and (done % preview_every == 0) and done < total:
            image = preview_image(p, kwargs.get("denoised"))
        events.put(Event("preview" if image is not None else "step", done, total, image))
        return {}

    def work() -> None:
        try:
            events.put(Event("done", result=job(on_step)))
        except FacediffError as e:
            events.put(Event("error", message=str(e)))
        except Exception as e:  # noqa: BLE001 — shown in the page as one line; the server keeps running
            events.put(Event("error", message=f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"))

    session.running = True
    thread = threading.Thread(target=work, daemon=True, name=f"facediff-ui-{session.id}")
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                event = events.get(timeout=0.5)
            except queue.Empty:
                if time.monotonic() > deadline:
                    session.stop.set()
                    yield Event("error", message=f"the generation took over {timeout:.0f} s and was stopped")
                    return
                continue
            yield event
            if event.kind in ("done", "error"):
                return
    finally:
        session.running = False
        if thread.is_alive():  # the page went away mid-run: stop it at the next step
            session.stop.set()


def run_request(req: Request, pipe, session: Session, out_dir: str | Path, limits: Limits, *,
                runtime: dict | None = None, preview_every: int = 5) -> Iterator[Event]:
    """Check ``req`` and run it with ``pipe`` (sample, compose or panorama), saving the grid and one PNG per
    image (each with its settings) in the session's folder."""
    from facediff import api

    try:
        check_request(req, limits)
    except FacediffError as e:
        yield Event("error", message=str(e))
        return
    folder = session.folder(out_dir)
    stem = time.strftime("%Y%m%d-%H%M%S") + f"-{uuid.uuid4().hex[:4]}"
    run = {"sample": api.sample, "compose": api.compose, "panorama": api.panorama}[req.command]

    def job(callback) -> dict:
        return run(req, out=folder / f"{stem}.png", save_each=folder / stem, pipeline=pipe,
                   callback_on_step_end=callback, **(runtime or {}))

    for event in stream(job, pipe, session, preview_every=preview_every):
        if event.kind == "done":
            session.last_seed = req.seed
            event.result["gallery"] = session.keep(list(event.result.get("each") or []))
        yield event

"""Plots where people look: on the asset's page in the Dagster UI, without a click.

The UI (dagster-webserver 1.13) renders a Markdown metadata value in place on the asset page (Overview >
Metadata, and the Events tab) only when the Markdown is shorter than 1,000 characters; longer values, such
as a PNG embedded as a data URI, hide behind "[Show Markdown]". So each plot is written as a PNG file next to
the run's compute logs (``<compute_logs>/<run_id>/figures/<name>-<hash>.png``) and the Markdown only links
it: the webserver serves files of its compute-log folder at ``/logs/<run_id>/figures/<name>-<hash>/png``, the
same route that serves a step's stdout and stderr. Where the instance keeps no local compute logs (or no run
is in progress) the plots are embedded as data URIs instead: one click away, but never missing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

INLINE_LIMIT = 1000  # the UI shows a Markdown value in place only below this many characters
FIGURES_DIR = "figures"  # under <compute_logs>/<run_id>/, next to the steps' stdout and stderr


def scaled_png(raw: bytes, width: int) -> bytes:
    """The PNG scaled down to ``width`` pixels when it is wider (small events, a plot that fits the page)."""
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as img:
        if img.width <= width:
            return raw
        buf = io.BytesIO()
        img.resize((width, round(img.height * width / img.width)), Image.LANCZOS).save(buf, "PNG", optimize=True)
        return buf.getvalue()


def _title(name: str) -> str:
    return name.replace("_", " ")


def served_figures(instance: dg.DagsterInstance, run_id: str, images: Mapping[str, bytes]) -> dict[str, str] | None:
    """Write each PNG next to ``run_id``'s compute logs; ``{name: URL path the webserver serves it at}``, or
    None when the instance keeps no local compute logs (nothing the webserver could serve)."""
    from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager

    manager = instance.compute_log_manager
    if not isinstance(manager, LocalComputeLogManager):
        return None
    urls = {}
    for name, raw in images.items():
        stem = f"{re.sub(r'[^A-Za-z0-9_-]+', '-', name)[:32]}-{hashlib.sha256(raw).hexdigest()[:10]}"
        log_key = [run_id, FIGURES_DIR, stem]
        path = Path(manager.get_captured_local_path(log_key, "png"))
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            tmp = path.with_suffix(".png.tmp")
            tmp.write_bytes(raw)
            tmp.replace(path)
        urls[name] = "/logs/" + "/".join(log_key) + "/png"
    return urls


def linked_markdown(urls: Mapping[str, str]) -> str | None:
    """Markdown showing every linked image with its title, short enough for the UI to render in place
    (titles dropped if need be); None when even that is too long."""
    for titled in (True, False):
        parts = [(f"**{_title(n)}**\n\n" if titled else "") + f"![{_title(n)}]({u})" for n, u in urls.items()]
        text = "\n\n".join(parts)
        if len(text) < INLINE_LIMIT:
            return text
    return None


def embedded_markdown(images: Mapping[str, bytes]) -> str:
    """Markdown with every image as a data URI: self-contained, shown behind "[Show Markdown]"."""
    parts = [f"**{_title(n)}**\n\n![{_title(n)}](data:image/png;base64,{base64.b64encode(raw).decode('ascii')})"
             for n, raw in images.items()]
    return "\n\n".join(parts) if parts else "_(no plots)_"


def current_run() -> tuple[dg.DagsterInstance, str] | None:
    """(instance, run id) of the op or asset executing now, or None outside one."""
    try:
        context = dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        return None
    return context.instance, context.run_id


def figures_markdown(images: Mapping[str, Path | bytes], width: int = 700,
                     run: tuple[dg.DagsterInstance, str] | None = None) -> dg.MarkdownMetadataValue:
    """PNG plots as a Markdown metadata value the UI shows in place (files served next to the run's compute
    logs, ``run`` default: the run executing now), else embedded as data URIs. Plots wider than ``width``
    pixels are scaled down."""
    raw = {name: scaled_png(src if isinstance(src, bytes) else Path(src).read_bytes(), width)
           for name, src in images.items()}
    if not raw:
        return dg.MetadataValue.md("_(no plots)_")
    run = run or current_run()
    urls = served_figures(*run, raw) if run is not None else None
    text = linked_markdown(urls) if urls else None
    return dg.MetadataValue.md(text if text is not None else embedded_markdown(raw))

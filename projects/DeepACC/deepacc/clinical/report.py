"""Offline HTML report of a folder of predicted spreads (one self-contained page, no network).

The report is built from the per-image records that ``deepacc-predict`` writes as JSON (see
``docs/predict.md``): for every spread its suggested karyotype (or, when the count is outside the
plausible range, that it is not determined, with the numerical string of the calls folded away),
count, sex chromosomes, the calls not counted (oversized round objects) with the reason, review
flags (clusters of overlapping calls folded like the uncertain calls), per-class copy numbers with
mean confidence, the overlay and the karyogram. Images are
referenced by relative paths inside the output folder (URL-encoded, so names with ``#``, ``%``,
``?`` or spaces link correctly), or embedded as base64 (``embed_images=True``)
so the single HTML file can be moved on its own. Only the report's own images are shown or embedded:
plain file names ending with ``.overlay.png`` / ``.karyogram.png`` of regular files in the output
folder (never a path edited into a record, never through a symbolic link; ``deepacc-predict`` rebuilds
each record's ``outputs`` from its JSON's name, :mod:`.outputs`). Nothing is fetched from the network: no scripts,
fonts or style sheets from outside the page.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import os
import stat
import urllib.parse
from typing import Iterable, Mapping, Optional, Sequence, Tuple

from ..fileio import atomic_write
from .summary import REVIEW_NOTE

__all__ = ["build_report_html", "write_report"]

_MAX_OPEN_UNCERTAIN = 8

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1a1a1a;max-width:1340px}
h1{font-size:24px;margin:0 0 6px} h2{font-size:19px;margin:28px 0 6px;border-bottom:2px solid #ccc;padding-bottom:4px}
.note{background:#fff4e5;border:1px solid #e6a23c;padding:10px 14px;border-radius:4px;margin:12px 0}
.meta{color:#555;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:center}
th{background:#f2f2f2}
.bad{background:#ffd9d9;font-weight:bold;color:#a00}
.ok{color:#060}
.kt{font-size:20px;font-weight:bold;font-family:monospace}
.flags li{color:#a00} details{margin:0 0 8px 22px} summary{cursor:pointer;color:#a00}
.figs{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.figs figure{margin:0;flex:1 1 560px;max-width:100%}
.figs img{max-width:100%;border:1px solid #ccc}
figcaption{font-size:12px;color:#555}
.fail td{color:#a00;text-align:left}
.toc td{text-align:left}
"""


_SUFFIX = {"overlay": ".overlay.png", "karyogram": ".karyogram.png"}  # deepacc.clinical.outputs.OUTPUT_SUFFIXES


def _own_output(output_dir: str, rel, key: str) -> Optional[str]:
    """``rel`` when it names one of the report's own images: a plain file name (no folder part, not
    hidden) ending with the suffix of ``key`` (``.overlay.png`` / ``.karyogram.png``) of a regular file
    of ``output_dir`` (not a symbolic link); else ``None``. A record's ``outputs`` are never trusted
    further: ``deepacc-predict`` rebuilds them from each JSON's own name before the report is built."""
    if not isinstance(rel, str) or not rel or rel != os.path.basename(rel) or "/" in rel or "\\" in rel:
        return None
    if rel.startswith(".") or not rel.endswith(_SUFFIX[key]):
        return None
    try:
        if not stat.S_ISREG(os.lstat(os.path.join(output_dir, rel)).st_mode):
            return None
    except OSError:
        return None
    return rel


def _img_src(output_dir: str, rel: str, embed: bool, key: str = "overlay") -> Optional[str]:
    rel = _own_output(output_dir, rel, key)
    if rel is None:
        return None
    if not embed:
        # A relative URL: percent-encode each path component (``case#7`` must not become a fragment,
        # ``50%`` an escape), then HTML-escape for the attribute.
        return html.escape(urllib.parse.quote(rel.replace(os.sep, "/")), quote=True)
    try:  # never through a link planted since the check
        fd = os.open(os.path.join(output_dir, rel), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def polarity_note(pol: Mapping) -> str:
    """One line on an image's polarity as ``deepacc-predict`` records it (``polarity`` of its JSON)."""
    detected = str(pol.get("detected", "")).replace("_", " ")
    seen = f"{detected} (detected)" if pol.get("decided") else f"not decided ({pol.get('reason', '')})"
    done = "inverted for the model" if pol.get("inverted") else "used as stored"
    return f"Image polarity: {seen}; {done} (INPUT.POLARITY {pol.get('mode', '?')})."


def _spread_section(rec: Mapping, idx: int, output_dir: str, embed: bool) -> str:
    e = html.escape
    s = rec["summary"]
    name = rec.get("name") or os.path.basename(rec.get("file_name", f"spread {idx}"))
    out = [f'<section id="spread-{idx}"><h2>{idx}. {e(name)}</h2>']
    out.append(f'<p class="meta">{e(str(rec.get("file_name", "")))}</p>')
    pol = rec.get("polarity")
    if isinstance(pol, Mapping):
        out.append(f'<p class="meta">{e(polarity_note(pol))}</p>')
    review = "needs review" if s.get("needs_review") else "no flags raised (still to be confirmed)"
    undetermined = not s.get("karyotype_determined", True) and s["count"]
    label = "Karyotype" if undetermined else "Suggested karyotype"
    out.append(
        f'<p>{label}: <span class="kt{" bad" if undetermined else ""}">{e(s["karyotype"])}</span> &nbsp; '
        f'{s["count"]} chromosomes called; sex chromosomes: {e(s["sex_chromosomes"] or "none")} '
        f'(inferred sex: {e(s["inferred_sex"])}); '
        f'<b class="{"bad" if s.get("needs_review") else "ok"}">{review}</b></p>'
    )
    if undetermined:
        t = s.get("thresholds", {})
        out.append(
            f'<p class="bad">{s["count"]} chromosomes called, outside the plausible range '
            f'{t.get("count_min", 40):g}-{t.get("count_max", 52):g}: chromosomes are likely missed, merged or split, '
            f"so no karyotype is suggested. Count the chromosomes on the image.</p>"
            f'<details class="meta"><summary>numerical string of the calls (not a karyotype)</summary>'
            f'<code>{e(s.get("karyotype_from_calls", ""))}</code></details>'
        )
    excluded = s.get("excluded") or []
    if excluded:
        out.append(f"<p><b>Not counted ({len(excluded)})</b>: not chromosomes by their size and shape; gray in the "
                   "overlay, left out of the karyogram</p>")
        out.append('<table class="fail"><tr><th>call</th><th>called as</th><th>score</th><th>box</th>'
                   "<th>reason</th></tr>")
        out.extend(
            f'<tr><td>{x["detection"]}</td><td>{e(str(x["class_name"]))}</td><td>{x["score"]:.2f}</td>'
            f'<td>{", ".join(f"{v:.0f}" for v in x["box"])}</td><td>{e(x["reason"])}</td></tr>'
            for x in excluded)
        out.append("</table>")
    flags = s.get("flags", [])
    if flags:
        folded = {"cluster": "cluster(s) of overlapping calls (magenta in the overlay): check the count and the "
                  "classes there",
                  "relabelled": "call(s) relabelled by the karyotype assignment",
                  "uncertain_call": "uncertain call(s)"}
        main = [f for f in flags if f.get("kind") not in folded]
        out.append(f'<p><b>Review flags ({len(flags)})</b></p><ul class="flags">')
        out.extend(f"<li>{e(f['message'])}</li>" for f in main)
        out.append("</ul>")
        for kind, caption in folded.items():
            items = [f for f in flags if f.get("kind") == kind]
            if not items:
                continue
            # A long list of calls is folded (click to open) so the page stays readable.
            opened = " open" if len(items) <= _MAX_OPEN_UNCERTAIN else ""
            out.append(f'<details{opened}><summary>{len(items)} {caption}</summary><ul class="flags">')
            out.extend(f"<li>{e(f['message'])}</li>" for f in items)
            out.append("</ul></details>")
    else:
        out.append("<p><b>Review flags:</b> none</p>")
    # Per-class copy numbers: one column per class.
    pcs = s["per_class"]
    head = "".join(f"<th>{e(c['name'])}</th>" for c in pcs)
    copies = "".join(
        f'<td class="{"bad" if c["copies"] != c["expected"] else ""}">{c["copies"]}</td>' for c in pcs
    )
    expected = "".join(f"<td>{c['expected']}</td>" for c in pcs)
    conf = "".join(
        "<td>-</td>" if c["mean_score"] is None else f"<td>{c['mean_score']:.2f}</td>" for c in pcs
    )
    out.append(
        f'<table><tr><th>class</th>{head}</tr><tr><th>copies</th>{copies}</tr>'
        f'<tr><th>expected</th>{expected}</tr><tr><th>mean conf.</th>{conf}</tr></table>'
    )
    figs = []
    for key, caption in (("overlay", "Detections (boxes coloured by Denver group; red = uncertain; gray = not "
                                     "counted; magenta = cluster)"),
                         ("karyogram", "Karyogram (ISCN layout; red frame = uncertain call)")):
        rel = rec.get("outputs", {}).get(key)
        src = _img_src(output_dir, rel, embed, key) if rel else None
        if src is None:
            figs.append(f"<figure><figcaption>{e(caption)}: image missing</figcaption></figure>")
        else:
            img = f'<img src="{src}" alt="{e(key)} of {e(name)}">'
            if not embed:  # click to open the image at full size
                img = f'<a href="{src}">{img}</a>'
            figs.append(f"<figure>{img}<figcaption>{e(caption)} (click to enlarge)</figcaption></figure>"
                        if not embed else f"<figure>{img}<figcaption>{e(caption)}</figcaption></figure>")
    out.append('<div class="figs">' + "".join(figs) + "</div></section>")
    return "\n".join(out)


def build_report_html(
    records: Sequence[Mapping],
    output_dir: str,
    failures: Iterable[Tuple[str, str]] = (),
    title: str = "DeepACC karyotype report",
    embed_images: bool = False,
) -> str:
    """HTML text of the report.

    Args:
        records: per-image records as written by ``deepacc-predict`` (``summary``, ``outputs``, ...).
        output_dir: folder the records' output paths are relative to (where the report is written).
        failures: ``(file, reason)`` of the inputs that could not be processed.
        embed_images: embed the PNGs as base64 instead of linking them by relative path.
    """
    e = html.escape
    failures = list(failures)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n_review = sum(1 for r in records if r["summary"].get("needs_review"))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">Generated {now}; {len(records)} spread(s), {n_review} with review flags, '
        f"{len(failures)} file(s) failed.</p>",
        f'<div class="note"><b>For review only.</b> {e(REVIEW_NOTE)}</div>',
    ]
    if records:
        settings = records[0].get("settings", {})
        if settings:
            shown = []
            for k, v in settings.items():
                if v in ("", None, [], ()):
                    continue
                shown.append(f"{e(str(k))} = {e(' '.join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))}")
            parts.append('<p class="meta">Settings: ' + ", ".join(shown) + "</p>")
        parts.append('<table class="toc"><tr><th>#</th><th>spread</th><th>suggested karyotype</th>'
                     "<th>count</th><th>flags</th></tr>")
        for i, r in enumerate(records, 1):
            s = r["summary"]
            name = r.get("name") or os.path.basename(r.get("file_name", ""))
            nf = len(s.get("flags", []))
            kt_cls = ' class="bad"' if not s.get("karyotype_determined", True) and s["count"] else ""
            parts.append(
                f'<tr><td>{i}</td><td><a href="#spread-{i}">{e(name)}</a></td><td{kt_cls}><b>{e(s["karyotype"])}</b></td>'
                f'<td>{s["count"]}</td><td class="{"bad" if nf else "ok"}">{nf}</td></tr>'
            )
        parts.append("</table>")
    if failures:
        parts.append('<h2>Files that could not be processed</h2><table class="fail">'
                     "<tr><th>file</th><th>reason</th></tr>")
        parts.extend(f"<tr><td>{e(str(f))}</td><td>{e(str(why))}</td></tr>" for f, why in failures)
        parts.append("</table>")
    for i, r in enumerate(records, 1):
        parts.append(_spread_section(r, i, output_dir, embed_images))
    parts.append(f'<div class="note">{e(REVIEW_NOTE)}</div></body></html>')
    return "\n".join(parts)


def write_report(
    records: Sequence[Mapping],
    output_dir: str,
    filename: str = "report.html",
    failures: Iterable[Tuple[str, str]] = (),
    title: str = "DeepACC karyotype report",
    embed_images: bool = False,
) -> str:
    """Write the report into ``output_dir`` (atomically) and return its path."""
    text = build_report_html(records, output_dir, failures=failures, title=title, embed_images=embed_images)
    path = os.path.join(output_dir, filename)
    atomic_write(path, text.encode("utf-8"))
    return path

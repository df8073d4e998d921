"""Build the project's static site: executed notebooks as HTML, their figures, the API reference.

    python scripts/build_site.py --notebooks build/notebooks --figures figures --site build/site

Inputs: the executed notebooks that ``make figures`` leaves in ``build/notebooks/`` (papermill
copies, with their outputs; the sources under ``notebooks/`` stay output-free), the figures
``<figures>/<stem>_*.png`` they wrote, and the API reference that ``make docs`` (pdoc) wrote to
``<site>/api/``. Output: ``<site>/index.html`` (one entry per notebook: title, figures, link to
the rendered notebook), ``<site>/notebooks/<stem>.html`` (nbconvert, lab template, outputs kept),
``<site>/figures/*.png``. Every relative link and ``src`` of every page, fragments included, is then
checked; a broken one fails the build with the page and the link. Pages are written atomically.
"""

from __future__ import annotations

import argparse
import html
import shutil
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:          # run as a script from a clone: gftlib from this checkout
    sys.path.insert(0, str(ROOT))

from gftlib.io import atomic_write_bytes, atomic_write_text  # noqa: E402

API_ENTRY = "api/index.html"           # pdoc's entry page (a redirect to the package page)


@dataclass(frozen=True)
class NotebookPage:
    """One rendered notebook: its stem, title (first heading), page path and figure paths (site-relative)."""

    stem: str
    title: str
    page: str
    figures: tuple[str, ...]


def notebook_title(nb: nbformat.NotebookNode, default: str) -> str:
    """The text of the first markdown heading of ``nb`` (``default`` if there is none)."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip() or default
    return default


def render_notebook(src: Path, dst: Path) -> str:
    """Render the executed notebook ``src`` to ``dst`` (HTML, outputs kept) behind a navigation line;
    return its title."""
    nb = nbformat.read(src, as_version=4)
    title = notebook_title(nb, src.stem)
    nav = nbformat.v4.new_markdown_cell(
        f"[Index](../index.html) · [API reference](../{API_ENTRY}) · "
        f"executed copy of `notebooks/{src.name}`")
    nb.cells.insert(0, nav)
    exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    atomic_write_text(dst, body)
    return title


def _index_html(pages: list[NotebookPage]) -> str:
    rows = []
    for p in pages:
        figs = "".join(f'<a href="{html.escape(f)}"><img src="{html.escape(f)}" '
                       f'alt="{html.escape(Path(f).stem)}" loading="lazy"></a>' for f in p.figures)
        rows.append(f'<section><h2><a href="{html.escape(p.page)}">{html.escape(p.title)}</a></h2>'
                    f'<p><code>notebooks/{html.escape(p.stem)}.ipynb</code></p>'
                    f'<div class="figs">{figs}</div></section>')
    none = "<p>No executed notebooks found: run <code>make figures</code> first.</p>"
    listing = "\n".join(rows) if rows else none
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gft-companion</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}}
.figs img{{max-height:11em;margin:0.2em;border:1px solid #ddd}} section{{margin-bottom:2em}}</style></head>
<body><h1>gft-companion: executed notebooks and API reference</h1>
<p>Runnable companion to "Gradual Fine-Tuning for Flow Matching Models". Each notebook below is shown as
executed by <code>make figures</code>, with its outputs; the figures are the files it wrote.
The library's reference, generated from its docstrings: <a href="{API_ENTRY}">API reference</a>.</p>
{listing}
</body></html>
"""


def build_site(notebooks_dir: Path, figures_dir: Path, site: Path) -> list[NotebookPage]:
    """Render every ``*.ipynb`` of ``notebooks_dir`` into ``site`` and write the index; the API reference
    must already be in ``site/api`` (``make docs``). Returns the pages, in name order."""
    if not (site / API_ENTRY).is_file():
        raise FileNotFoundError(f"{site / API_ENTRY} is missing: build the API reference first (make docs)")
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"notebooks folder {notebooks_dir} does not exist: run make figures first")
    for sub in ("notebooks", "figures"):
        shutil.rmtree(site / sub, ignore_errors=True)
        (site / sub).mkdir(parents=True)
    pages = []
    for src in sorted(notebooks_dir.glob("*.ipynb")):
        page = f"notebooks/{src.stem}.html"
        title = render_notebook(src, site / page)
        figs = []
        for png in sorted(figures_dir.glob(f"{src.stem}_*.png")):
            atomic_write_bytes(site / "figures" / png.name, png.read_bytes())
            figs.append(f"figures/{png.name}")
        pages.append(NotebookPage(stem=src.stem, title=title, page=page, figures=tuple(figs)))
    atomic_write_text(site / "index.html", _index_html(pages))
    return pages


class _Links(HTMLParser):
    """Collects the href/src targets and the id/name anchors of one HTML page (script bodies are data)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.anchors: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if value is None:
                continue
            if key in ("href", "src"):
                self.links.append(value)
            elif key in ("id", "name"):
                self.anchors.add(value)


@dataclass
class LinkReport:
    """Result of :func:`check_links`: pages read, relative links checked, the broken ones
    (``page: link (why)``), and pdoc's anchorless links to members inherited from a hidden base class."""

    pages: int = 0
    checked: int = 0
    broken: list[str] = field(default_factory=list)
    inherited: list[str] = field(default_factory=list)


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    return parser


def check_links(site: Path) -> LinkReport:
    """Check every relative ``href``/``src`` of every ``*.html`` under ``site``: the target must be a file
    inside ``site`` and, for ``page.html#frag``, the page must have an element with id (or name) ``frag``.
    Links with a scheme (https:, data:, mailto:, ...) or a host are not checked (offline)."""
    site = site.resolve()
    report = LinkReport()
    cache: dict[Path, _Links] = {}

    def parsed(p: Path) -> _Links:
        if p not in cache:
            cache[p] = _parse(p)
        return cache[p]

    for page in sorted(site.rglob("*.html")):
        report.pages += 1
        rel_page = page.relative_to(site)
        for link in parsed(page).links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith("//"):
                continue
            report.checked += 1
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if site not in target.parents and target != site:
                report.broken.append(f"{rel_page}: {link} (points outside the site)")
            elif not target.is_file():
                report.broken.append(f"{rel_page}: {link} (no such file)")
            elif (parts.fragment and target.suffix == ".html"     # as browsers do: raw id, then decoded
                  and not {parts.fragment, unquote(parts.fragment)} & parsed(target).anchors):
                msg = f"{rel_page}: {link} (no anchor #{parts.fragment} in {target.relative_to(site)})"
                # pdoc lists a public class's members inherited from a private base it does not render
                # (e.g. a `_Base` class) as links `#_Base.member` or `#Class.member` without an
                # anchor: a pdoc limitation, reported apart (the class itself must have its anchor)
                frag = unquote(parts.fragment)
                owner = frag.split(".")[0]
                inherited = frag.startswith("_") or ("." in frag and owner in parsed(target).anchors)
                (report.inherited if inherited else report.broken).append(msg)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notebooks", type=Path, default=Path("build/notebooks"), help="executed notebooks")
    ap.add_argument("--figures", type=Path, default=Path("figures"), help="figures the notebooks wrote")
    ap.add_argument("--site", type=Path, default=Path("build/site"),
                    help="output folder (with the API reference already in api/)")
    args = ap.parse_args(argv)
    pages = build_site(args.notebooks, args.figures, args.site)
    links = check_links(args.site)
    print(f"site: {len(pages)} notebooks, {links.pages} pages, {links.checked} relative links checked "
          f"-> {args.site / 'index.html'}")
    if links.inherited:
        print(f"warning: {len(links.inherited)} links to members inherited from a base class pdoc does not "
              f"render, e.g. {links.inherited[0]}", file=sys.stderr)
    if links.broken:
        print(f"{len(links.broken)} broken links:\n  " + "\n  ".join(links.broken[:50]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

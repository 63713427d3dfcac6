"""The web page's files (`page/`), shipped in the package: read by the service (`serve/app.py`) and inlined by
the offline page (`serve/render.py`). A leaf: it imports nothing from leadrrg."""

from importlib import resources

PAGE_FILES = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "index.html": "text/html",
    "docs.html": "text/html",
}
# The tags of index.html that load the style and the script from the service; the offline page replaces each
# with the file's text inlined (`render.explain_html`), and fails if either is missing.
STYLE_TAG = '<link rel="stylesheet" href="static/style.css">'
SCRIPT_TAG = '<script src="static/app.js"></script>'


def page_text(name: str) -> str:
    """The text of one of the page's files, e.g. `page_text("index.html")`."""
    return resources.files("leadrrg.serve").joinpath("page", name).read_text(encoding="utf-8")

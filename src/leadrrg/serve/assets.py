"""The web page's files (`page/`), shipped in the package: read by the service (`serve/app.py`) and inlined by
the offline page (`serve/render.py`). A leaf: it imports nothing from leadrrg."""

from importlib import resources

PAGE_FILES = {
    "app.js": "text/javascript",
    "tools.js": "text/javascript",
    "style.css": "text/css",
    "index.html": "text/html",
    "docs.html": "text/html",
}
# The tags of index.html that load the style and the scripts from the service; the offline page replaces each
# with the file's text inlined (`render.explain_html`), and fails if one is missing.
STYLE_TAG = '<link rel="stylesheet" href="static/style.css">'
SCRIPT_TAG = '<script src="static/app.js"></script>'
TOOLS_TAG = '<script src="static/tools.js"></script>'


def page_text(name: str) -> str:
    """The text of one of the page's files, e.g. `page_text("index.html")`."""
    return resources.files("leadrrg.serve").joinpath("page", name).read_text(encoding="utf-8")


# Example studies the page offers to click (`page/examples/`): small SynthCXR PNGs and `index.json`, which says
# what each one shows and how it was made.
EXAMPLE_TYPES = {".png": "image/png", ".json": "application/json"}


def example_files() -> dict[str, str]:
    """The files of `page/examples/`, name -> media type."""
    folder = resources.files("leadrrg.serve").joinpath("page", "examples")
    if not folder.is_dir():
        return {}
    names = sorted(entry.name for entry in folder.iterdir() if entry.is_file())
    return {
        name: EXAMPLE_TYPES[suffix] for name in names if (suffix := name[name.rfind(".") :]) in EXAMPLE_TYPES
    }


def example_bytes(name: str) -> bytes:
    """The bytes of one of `example_files()`, e.g. `example_bytes("normal.png")`."""
    return resources.files("leadrrg.serve").joinpath("page", "examples", name).read_bytes()

"""The docs site (mkdocs.yml, docs/): it builds with --strict (broken links, anchors, snippets and pages fail) and
needs nothing from the network to show."""
from __future__ import annotations

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Tags whose src/href the browser fetches on its own when it shows the page (an <a> is only a link).
ASSET_TAGS = {"script", "link", "img", "iframe", "source", "video", "audio", "embed"}


class _RemoteAssets(HTMLParser):
    """Collects the URLs of assets a page would fetch from another host."""

    def __init__(self) -> None:
        super().__init__()
        self.remote: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ASSET_TAGS:
            return
        for name, value in attrs:
            if name in ("src", "href") and value and value.startswith(("http://", "https://", "//")):
                self.remote.append(f"<{tag} {name}={value}>")


def test_site_builds_strict_and_offline(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=REPO,
                          capture_output=True, text=True, timeout=180, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    remote = {}
    for page in site.rglob("*.html"):
        parser = _RemoteAssets()
        parser.feed(page.read_text(encoding="utf-8"))
        if parser.remote:
            remote[str(page.relative_to(site))] = parser.remote
    assert not remote, f"pages that fetch from the network (fonts, CDNs): {remote}"
    assert (site / "assets" / "javascripts" / "swagger-ui-bundle.js").is_file(), "Swagger UI's own files are served"
    assert list((site / "api").glob("swagger-*.html")), "the API page renders the OpenAPI documents"

"""Static checks of an HTML page: element ids, and every reference that could load a resource."""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Attributes through which a page can fetch something.
URL_ATTRIBUTES = {
    "src", "href", "srcset", "poster", "data", "action", "formaction", "background",
    "xlink:href", "manifest", "ping", "cite", "longdesc", "usemap", "codebase",
}  # fmt: skip
CSS_URL = re.compile(r"url\(\s*(['\"]?)(.*?)\1\s*\)|@import\s+(['\"])(.*?)\3", re.I)
LOCAL = ("#", "data:")


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: dict[str, str] = {}  # id -> tag
        self.refs: list[str] = []
        self.children: dict[str, int] = {}  # svg id -> elements inside it
        self._svg: list[str] = []
        self._style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "id":
                self.ids[value] = tag
            elif name in URL_ATTRIBUTES:
                self.refs += [v.strip().split()[0] for v in value.split(",") if v.strip()]
            elif name == "style":
                self.refs += _css_urls(value)
            elif tag == "meta" and name == "http-equiv" and value.lower() == "refresh":
                self.refs.append("meta refresh")
        if tag in ("link", "iframe", "object", "embed", "base", "frame"):
            self.refs.append(f"<{tag}>")  # none belongs in a self-contained report
        if self._svg:
            self.children[self._svg[0]] += 1
        if tag == "svg":
            sid = dict(attrs).get("id") or ""
            self._svg.append(sid)
            self.children.setdefault(sid, 0)
        self._style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg" and self._svg:
            self._svg.pop()
        if tag == "style":
            self._style = False

    def handle_data(self, data: str) -> None:
        if self._style:
            self.refs += _css_urls(data)


def _css_urls(css: str) -> list[str]:
    return [m.group(2) or m.group(4) or "" for m in CSS_URL.finditer(css)]


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def external_references(html: str) -> list[str]:
    """Every reference in the page that is not an in-page anchor or a data: URL."""
    return [r for r in parse(html).refs if not r.startswith(LOCAL)]

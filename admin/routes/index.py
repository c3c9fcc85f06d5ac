"""The admin API's front page: ``GET /`` lists every resource, as JSON or as a page.

The list is read from the app's own OpenAPI document, so it cannot drift from the
routes: every path without a parameter is a resource (a link, with its methods and the
first line of its description), and each parameterised path is listed under the
resource it starts with (``/clusters/{cluster}/health`` under ``/clusters``). The pages
the schema does not describe (``/docs``, ``/openapi.json``, ``/dashboard``) come first.

A browser (an ``Accept`` that prefers ``text/html`` to JSON) gets a small HTML index
of the same; anything else (curl's ``*/*``, an API client) gets JSON. Like ``/docs``
and ``/openapi.json`` it needs no API key (``guard.public``): it is the same for every
gateway of this version.
"""

from __future__ import annotations

import html
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from admin.errors import responses

router = APIRouter(tags=["index"])

DOCS = "/docs"
OPENAPI = "/openapi.json"
DASHBOARD = "/dashboard"


class Resource(BaseModel):
    """One resource of the admin API."""

    href: str
    methods: list[str]
    description: str
    #: the parameterised paths under it (an item, its parts), as OpenAPI writes them
    paths: list[str] = Field(default_factory=list)


class Index(BaseModel):
    """What the admin API serves, with links."""

    title: str
    docs: str
    openapi: str
    dashboard: str
    #: whether the requests other than these pages need the API key
    api_key_required: bool
    #: how to send it, when it is
    api_key_hint: str | None
    resources: list[Resource]


#: the pages that are not in the schema: what they are
PAGES = (
    Resource(
        href=DOCS,
        methods=["GET"],
        description="Interactive API docs (Swagger UI, served by the gateway itself)",
    ),
    Resource(href=OPENAPI, methods=["GET"], description="This API's OpenAPI 3.1 document"),
    Resource(
        href=DASHBOARD,
        methods=["GET"],
        description="The live dashboard: a page for a browser, polling /dashboard/data",
    ),
)


def _first_line(text: str | None) -> str:
    """A docstring's first paragraph as one plain line (no reST quotes, no full stop)."""
    paragraph = (text or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split()).replace("``", "").rstrip(".")


def _resource_of(path: str) -> str:
    """The parameter-free path a path starts with (itself if it has no parameter)."""
    head, _, _ = path.partition("/{")
    return head


def build_index(schema: dict[str, Any], *, key_hint: str | None) -> Index:
    """The index of the API that ``schema`` (its OpenAPI document) describes."""
    paths: dict[str, dict[str, Any]] = schema["paths"]
    resources = {page.href: page.model_copy(deep=True) for page in PAGES}
    for path, operations in paths.items():
        if path == "/" or "{" in path:
            continue
        operation = operations.get("get") or next(iter(operations.values()))
        resources[path] = Resource(
            href=path,
            methods=[method.upper() for method in operations],
            description=_first_line(operation.get("description")) or operation.get("summary", ""),
        )
    for path in paths:
        under = resources.get(_resource_of(path))
        if "{" in path and under is not None:
            under.paths.append(path)
    return Index(
        title=schema["info"]["title"],
        docs=DOCS,
        openapi=OPENAPI,
        dashboard=DASHBOARD,
        api_key_required=key_hint is not None,
        api_key_hint=key_hint,
        resources=list(resources.values()),
    )


def _quality(accept: str, media: str) -> float:
    """The ``q`` that ``accept`` gives ``media`` through its most specific range."""
    kind = media.partition("/")[0]
    best: tuple[int, float] = (-1, 0.0)
    for part in accept.split(","):
        range_, *params = (p.strip() for p in part.split(";"))
        specificity = {media: 2, f"{kind}/*": 1, "*/*": 0}.get(range_.lower(), -1)
        if specificity <= best[0]:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best = (specificity, q)
    return best[1]


def prefers_html(accept: str | None) -> bool:
    """Whether a client sending this ``Accept`` would rather have HTML than JSON."""
    if not accept:
        return False
    html_q = _quality(accept, "text/html")
    return html_q > 0 and html_q > _quality(accept, "application/json")


_STYLE = (
    "body{font:15px/1.5 system-ui,sans-serif;max-width:62rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse;width:100%}td,th{text-align:left;vertical-align:top;"
    "padding:.3rem .6rem;border-bottom:1px solid #ddd}small{color:#666}"
)


def render_html(index: Index) -> str:
    """The index as a small page: one row per resource, GET-able ones as links."""
    e = html.escape
    rows = []
    for resource in index.resources:
        name = f"<code>{e(resource.href)}</code>"
        if "GET" in resource.methods:
            name = f'<a href="{e(resource.href)}">{name}</a>'
        more = "<br>".join(f"<small><code>{e(p)}</code></small>" for p in resource.paths)
        rows.append(
            f"<tr><td>{name}</td><td>{e(' '.join(resource.methods))}</td>"
            f"<td>{e(resource.description)}{'<br>' + more if more else ''}</td></tr>"
        )
    key = (
        f"<p>Every other request needs the API key: {e(index.api_key_hint)}.</p>"
        if index.api_key_hint
        else ""
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(index.title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{e(index.title)}</h1>"
        f'<p><a href="{e(index.docs)}">Interactive docs</a> · '
        f'<a href="{e(index.dashboard)}">Dashboard</a> · '
        f'<a href="{e(index.openapi)}">OpenAPI document</a></p>{key}'
        "<table><tr><th>resource</th><th>methods</th><th>what</th></tr>"
        f"{''.join(rows)}</table></body></html>\n"
    )


@router.get(
    "/",
    name="index",
    response_model=Index,
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}},
        **responses(403),
    },
)
async def index(request: Request) -> Response:
    """Every resource of the admin API, with links (HTML for a browser, JSON otherwise)."""
    app = request.app
    if getattr(app.state, "index", None) is None:
        app.state.index = build_index(app.openapi(), key_hint=app.state.key_hint)
    found: Index = app.state.index
    headers = {"Vary": "Accept"}
    if prefers_html(request.headers.get("accept")):
        return HTMLResponse(render_html(found), headers=headers)
    return JSONResponse(found.model_dump(), headers=headers)

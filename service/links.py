"""Links the API hands out (`next` of a page, `Location` of a created resource), never built from
the request's Host header: a client or a proxy chooses that header, and a link naming it would send
the next request (with its API key) wherever the header said.

With `PROMPTEHR_PUBLIC_BASE_URL` set (for example https://ehr.example.org), links are absolute on
that base; without it they are relative references (`/cohorts/ID`), which clients resolve against
the URL they called (RFC 3986 section 5).
"""
from __future__ import annotations

from fastapi import Request


def public_link(request: Request, path_and_query: str) -> str:
    """`path_and_query` (starting with /) on the configured public base URL, or as it is."""
    base = request.app.state.settings.public_base_url
    return f"{base.rstrip('/')}{path_and_query}" if base else path_and_query


def link_for(request: Request, name: str, **path_params: str) -> str:
    """The link to the route named `name` (a proxy's root_path kept, the Host never used)."""
    root = request.scope.get("app_root_path", request.scope.get("root_path", ""))
    path = root.rstrip("/") + str(request.app.url_path_for(name, **path_params))
    return public_link(request, path)

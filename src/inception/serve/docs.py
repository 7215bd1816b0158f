"""``GET /docs``: the API reference as one HTML page rendered from the OpenAPI document.

FastAPI's own docs pages (Swagger UI, ReDoc) load their scripts and styles from a CDN,
which an offline or locked-down server cannot reach; this page is plain HTML made here,
with no script and no external asset. The machine-readable document stays at
``/openapi.json`` for tools (Swagger UI, code generators) that have their own copy.
"""

from __future__ import annotations

import json
import re
from html import escape

METHODS = ("get", "post", "put", "delete", "patch")

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:960px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}.op{background:#fff;border:1px solid #dde1e7;border-radius:8px;margin:14px 0;padding:12px 16px}
.m{display:inline-block;min-width:52px;text-align:center;border-radius:4px;color:#fff;font-weight:600;
padding:2px 6px;margin-right:8px;font-size:13px}.get{background:#2f7d4f}.post{background:#2d5fa8}
code,pre{font:13px ui-monospace,monospace;background:#eef0f3;border-radius:4px;padding:1px 4px}
pre{padding:8px;overflow:auto;max-height:260px}table{border-collapse:collapse;margin:6px 0}
td,th{border-bottom:1px solid #e5e8ec;padding:3px 10px 3px 0;text-align:left;vertical-align:top}
.lock{color:#a15c00;font-size:13px}
"""


def _text(markdown: str) -> str:
    """Escaped text with its `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(markdown))


def _schema_text(schema: dict) -> str:
    return escape(json.dumps(schema, indent=1)[:4000])


def render_docs(spec: dict) -> str:
    """The page for OpenAPI document ``spec``: every operation with its parameters, request
    body content types and responses."""
    info = spec.get("info", {})
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(info.get('title', 'API'))} "
             f"&ndash; API</title><link rel=icon href='data:,'><style>{STYLE}</style></head><body><main>",
             f"<h1>{escape(info.get('title', 'API'))} <small>{escape(str(info.get('version', '')))}</small></h1>",
             f"<p>{_text(info.get('description', ''))}</p>",
             "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>. The web page: <a href='/'>/</a>.</p>"]
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            locked = " <span class=lock>needs the bearer token</span>" if op.get("security") else ""
            parts.append(f"<section class=op id='{escape(method + path)}'><div><span class='m {method}'>"
                         f"{method.upper()}</span><code>{escape(path)}</code>{locked}</div>")
            if op.get("summary"):
                parts.append(f"<p><b>{escape(op['summary'])}</b></p>")
            if op.get("description"):
                parts.append(f"<p>{_text(op['description'])}</p>")
            params = op.get("parameters") or []
            if params:
                parts.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th>description</th></tr>")
                for p in params:
                    schema = p.get("schema", {})
                    kind = schema.get("type", "")
                    if "default" in schema:
                        kind += f", default {schema['default']}"
                    parts.append(f"<tr><td><code>{escape(p.get('name', ''))}</code></td><td>{escape(p.get('in', ''))}"
                                 f"</td><td>{escape(kind)}</td><td>{escape(p.get('description', ''))}</td></tr>")
                parts.append("</table>")
            body = op.get("requestBody")
            if body:
                types = ", ".join(f"<code>{escape(t)}</code>" for t in body.get("content", {}))
                parts.append(f"<p>Request body: {types}</p>")
                for ctype, content in body.get("content", {}).items():
                    if ctype == "application/json" and content.get("schema"):
                        parts.append(f"<details><summary>JSON schema</summary><pre>{_schema_text(content['schema'])}"
                                     "</pre></details>")
            responses = op.get("responses") or {}
            if responses:
                parts.append("<table><tr><th>status</th><th>meaning</th></tr>")
                for code, resp in responses.items():
                    parts.append(f"<tr><td>{escape(str(code))}</td><td>{escape(resp.get('description', ''))}"
                                 "</td></tr>")
                parts.append("</table>")
            parts.append("</section>")
    parts.append("</main></body></html>")
    return "".join(parts)

"""The floor of the SOAP benchmark: GET /quotes/{symbol} written by hand on Starlette with one
pooled aiohttp ClientSession, the envelope an f-string, the answer read with XPaths compiled at
start, JSON out (stdlib json, as the shared benchmark's floor).  Served by uvicorn (uvloop,
httptools), one process.  BACKEND_URL: the SOAP service (benchmarks/soap/backend.js).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from xml.sax.saxutils import escape

import aiohttp
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BACKEND_URL = os.environ.get("BACKEND_URL", "http://127.0.0.1:18300/soap")
ENVELOPE = ('<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/'
            'envelope/"><soap:Body><getQuote xmlns="http://example.com/stockquote"><symbol>{}</symbol></getQuote>'
            "</soap:Body></soap:Envelope>")
HEADERS = {"content-type": "text/xml; charset=utf-8", "soapaction": '"http://example.com/stockquote/getQuote"'}
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
NS = {"s": "http://schemas.xmlsoap.org/soap/envelope/", "q": "http://example.com/stockquote"}
FAULT = etree.XPath("/s:Envelope/s:Body/s:Fault", namespaces=NS)
ANSWER = etree.XPath("/s:Envelope/s:Body/q:getQuoteResponse", namespaces=NS)
session: aiohttp.ClientSession


async def quote(request: Request) -> Response:
    body = ENVELOPE.format(escape(request.path_params["symbol"])).encode()
    async with session.post(BACKEND_URL, data=body, headers=HEADERS) as reply:
        data = await reply.read()
    root = etree.fromstring(data, PARSER)
    if FAULT(root):
        return Response(b'{"title":"not found"}', 404, media_type="application/problem+json")
    answer = ANSWER(root)[0]
    out = {"symbol": answer.findtext("q:symbol", namespaces=NS), "name": answer.findtext("q:name", namespaces=NS),
           "price": float(answer.findtext("q:price", namespaces=NS) or "nan"),
           "qty": int(answer.findtext("q:qty", namespaces=NS) or 0)}
    return Response(json.dumps(out, separators=(",", ":")).encode(), media_type="application/json")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global session
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), auto_decompress=False,
                                    timeout=aiohttp.ClientTimeout(total=30))
    yield
    await session.close()


app = Starlette(routes=[Route("/quotes/{symbol}", quote)], lifespan=lifespan)

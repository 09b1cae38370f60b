"""XSLT stylesheets compiled once at load, run with no access to files or the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lxml import etree

from engine.errors import FlowError
from engine.paths import OutsideFolder, inside_url

# document(), xsl:include at run time, exsl:document output: all refused
_NO_ACCESS = etree.XSLTAccessControl.DENY_ALL


class _InsideFolder(etree.Resolver):
    """xsl:include and xsl:import are read at compile time, before any access control applies:
    they may name files of the flow folder only."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def resolve(self, system_url: str | None, public_id: str | None, context: object) -> Any:
        return self.resolve_filename(str(inside_url(self.folder, system_url or "")), context)


def _stylesheet_parser(folder: Path) -> etree.XMLParser:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    parser.resolvers.add(_InsideFolder(folder))
    return parser


class XsltCompileError(ValueError):
    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


class XsltError(FlowError):
    code = "xslt-failed"
    title = "Transformation failed"


class CompiledXslt:
    def __init__(self, transform: etree.XSLT, path: Path) -> None:
        self._transform = transform
        self.path = path

    def apply(self, root: etree._Element, params: dict[str, str] | None = None) -> etree._Element:
        quoted = {name: etree.XSLT.strparam(value) for name, value in (params or {}).items()}
        try:
            result = self._transform(root, **quoted)  # type: ignore[arg-type]  # stubs predate strparam
        except etree.XSLTApplyError as exc:
            raise XsltError(f"{self.path.name}: {_first_message(exc)}") from None
        output = result.getroot()
        if output is None:
            raise XsltError(f"{self.path.name} produced no XML element")
        return output


def _first_message(exc: etree.Error) -> str:
    log = getattr(exc, "error_log", None)
    if log:
        return str(log[0].message)
    return str(exc)


def compile_xslt(path: Path, folder: Path | None = None) -> CompiledXslt:
    """Compile a stylesheet; errors carry the stylesheet's own line and column.  What it includes
    or imports must lie inside ``folder`` (default: the stylesheet's own folder)."""
    parser = _stylesheet_parser(Path(folder or path.parent).resolve())
    try:
        document = etree.parse(str(path), parser)
    except OutsideFolder as exc:
        raise XsltCompileError(str(exc), 1, 1) from None
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (1, 1)
        raise XsltCompileError(f"not well-formed XML: {exc.msg}", line, column) from None
    try:
        transform = etree.XSLT(document, access_control=_NO_ACCESS)
    except OutsideFolder as exc:
        raise XsltCompileError(f"xsl:include or xsl:import: {exc}", 1, 1) from None
    except etree.XSLTParseError as exc:
        entries = list(exc.error_log)
        line = next((e.line for e in entries if e.line), 1)
        column = next((e.column for e in entries if e.column), 1)
        messages = "; ".join(dict.fromkeys(e.message for e in entries if e.message)) or str(exc)
        raise XsltCompileError(messages, line, column) from None
    return CompiledXslt(transform, path)

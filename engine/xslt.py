"""XSLT stylesheets compiled once at load, run with no access to files or the network."""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from engine.errors import FlowError

_STYLESHEET_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
# document(), xsl:include at run time, exsl:document output: all refused
_NO_ACCESS = etree.XSLTAccessControl.DENY_ALL


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


def compile_xslt(path: Path) -> CompiledXslt:
    """Compile a stylesheet; errors carry the stylesheet's own line and column."""
    try:
        document = etree.parse(str(path), _STYLESHEET_PARSER)
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (1, 1)
        raise XsltCompileError(f"not well-formed XML: {exc.msg}", line, column) from None
    try:
        transform = etree.XSLT(document, access_control=_NO_ACCESS)
    except etree.XSLTParseError as exc:
        entries = list(exc.error_log)
        line = next((e.line for e in entries if e.line), 1)
        column = next((e.column for e in entries if e.column), 1)
        messages = "; ".join(dict.fromkeys(e.message for e in entries if e.message)) or str(exc)
        raise XsltCompileError(messages, line, column) from None
    return CompiledXslt(transform, path)

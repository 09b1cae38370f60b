"""Files a flow names (xslt:, a served WSDL, what a stylesheet includes) come from its folder only.

Before: `xslt: ../../elsewhere.xsl`, an absolute path or a link out of the folder loaded, and an
xsl:include of a file outside the folder was read at compile time (access control applies to
transforms only).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.loader import LoadErrors, load_project
from tests.support.engine import write_flows

STYLESHEET = ('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">{include}'
              '<xsl:template match="/"><out/></xsl:template></xsl:stylesheet>')
WSDL = Path(__file__).resolve().parents[2] / "flows" / "stockquote.wsdl"


def xslt_flow(name: str) -> str:
    return f"""
    flows:
      t:
        source: {{http: {{method: POST, path: /t}}}}
        steps:
          - transform: {{xslt: "{name}"}}
    """


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """tmp/outside.xsl beside tmp/flows/ (with xsl/inside.xsl and a link out)."""
    (tmp_path / "outside.xsl").write_text(STYLESHEET.format(include=""), encoding="utf-8")
    folder = tmp_path / "flows"
    (folder / "xsl").mkdir(parents=True)
    (folder / "xsl" / "inside.xsl").write_text(STYLESHEET.format(include=""), encoding="utf-8")
    os.symlink(tmp_path / "outside.xsl", folder / "link.xsl")
    (folder / "includes-out.xsl").write_text(
        STYLESHEET.format(include='<xsl:include href="../outside.xsl"/>'), encoding="utf-8")
    (folder / "includes-in.xsl").write_text(
        STYLESHEET.format(include='<xsl:import href="xsl/inside.xsl"/>'), encoding="utf-8")
    return folder


@pytest.mark.parametrize(("name", "words"), [
    ("../outside.xsl", "'../outside.xsl' is outside the flow folder"),
    ("ABSOLUTE", "is outside the flow folder"),
    ("link.xsl", "'link.xsl' is outside the flow folder"),
    ("xsl/../../outside.xsl", "is outside the flow folder"),
    ("includes-out.xsl", "xsl:include or xsl:import: '"),
])
def test_a_stylesheet_from_outside_the_folder_is_a_positioned_load_error(layout: Path, name: str,
                                                                         words: str) -> None:
    if name == "ABSOLUTE":
        name = str(layout.parent / "outside.xsl")
    write_flows(layout, xslt_flow(name))
    with pytest.raises(LoadErrors) as caught:
        load_project(layout)
    [error] = caught.value.errors
    assert (error.file, error.line) == (layout / "flows.yaml", 5), str(error)
    assert words in error.message


@pytest.mark.parametrize("name", ["xsl/inside.xsl", "includes-in.xsl", "./xsl/inside.xsl"])
def test_stylesheets_inside_the_folder_load(layout: Path, name: str) -> None:
    write_flows(layout, xslt_flow(name))
    assert load_project(layout).compiled is not None


def test_a_served_wsdl_from_outside_the_folder_is_a_positioned_load_error(tmp_path: Path) -> None:
    (tmp_path / "stockquote.wsdl").write_bytes(WSDL.read_bytes())
    folder = write_flows(tmp_path / "flows", """
    flows:
      quote:
        source:
          soap: {path: /svc, wsdl: ../stockquote.wsdl, operation: getQuote}
        steps:
          - respond: {json: {}}
    """)
    with pytest.raises(LoadErrors) as caught:
        load_project(folder)
    [error] = caught.value.errors
    assert error.file == folder / "flows.yaml" and error.line == 4
    assert "'../stockquote.wsdl' is outside the flow folder" in error.message


def _wsdl_importing(location: str) -> bytes:
    """The example WSDL with its schema importing another schema from ``location``."""
    text = WSDL.read_text()
    schema_open = '<xsd:schema targetNamespace="http://example.com/stockquote" elementFormDefault="qualified">'
    assert schema_open in text
    return text.replace(schema_open, schema_open + f'<xsd:import namespace="urn:elsewhere" '
                                                   f'schemaLocation="{location}"/>').encode()


ELSEWHERE_XSD = ('<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:elsewhere">'
                 '<xsd:element name="x" type="xsd:string"/></xsd:schema>')
SOAP_FLOW = """
flows:
  quote:
    source:
      soap: {path: /svc, wsdl: stockquote.wsdl, operation: getQuote}
    steps:
      - respond: {json: {}}
"""


def test_what_a_wsdl_imports_from_outside_the_folder_is_a_positioned_load_error(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.xsd").write_text(ELSEWHERE_XSD)
    folder = write_flows(tmp_path / "flows", SOAP_FLOW)
    (folder / "stockquote.wsdl").write_bytes(_wsdl_importing("../elsewhere.xsd"))
    with pytest.raises(LoadErrors) as caught:
        load_project(folder)
    [error] = caught.value.errors
    assert error.file == folder / "flows.yaml" and error.line == 4
    assert "elsewhere.xsd" in error.message and "is outside the flow folder" in error.message


def test_what_a_wsdl_imports_from_inside_the_folder_loads(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", SOAP_FLOW)
    (folder / "elsewhere.xsd").write_text(ELSEWHERE_XSD)
    (folder / "stockquote.wsdl").write_bytes(_wsdl_importing("elsewhere.xsd"))
    assert load_project(folder).compiled is not None

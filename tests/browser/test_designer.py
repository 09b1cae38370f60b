"""The designer in a real browser (Debian's Chromium, headless, driven by Playwright).

One session walks what an integrator does: drag a step kind into a branch, edit it, save,
check the file on disk byte for byte, reload, do the same from the keyboard, try the flow and
read the branch taken and a step's message on the canvas.  It also measures a 200-step flow
(reported, not asserted: timings are noisy on a shared machine) and takes the screenshots of
docs/designer.md: into a temporary folder on every run, into docs/ only when asked
(``make designer-screenshots``, which sets DESIGNER_SCREENSHOTS=docs).  Every request the page
makes must stay on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import httpx
import pytest

from tests.support.engine import REPO
from tests.support.services import free_port

pytestmark = pytest.mark.browser
STATIC = REPO / "designer" / "static" / "index.html"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]

FLOW = dedent("""\
    # Routes orders by their type.   <- this comment must survive every save
    flows:
      route:
        description: 'Single-quoted: kept as it is'
        source: {http: {method: POST, path: /route}}
        steps:
          - choice:
              when:
                - if: ${payload.type == 'gold'}
                  steps:
                    - set: {var: tier, value: gold}   # gold first
              otherwise:
                - set: {var: tier, value: plain}

          - respond:
              json: {tier: "${vars.tier}"}
    """)
SUITE = dedent("""\
    cases:
      - name: gold orders are gold
        request: {method: POST, path: /route, json: {type: gold}}
        expect: {status: 200, json: {tier: gold}}
    """)


def big_flow(steps: int = 200) -> str:
    """A flow of ``steps`` steps: a long main lane, choices with branches, nested lists."""
    lines = ["flows:", "  big:", "    source: {http: {method: POST, path: /big}}", "    steps:"]
    count = 0
    while count < steps:
        if count % 20 == 0 and count + 6 <= steps:
            lines += ["      - choice:", "          when:", "            - if: ${payload.n == `1`}",
                      "              steps:", "                - log: one",
                      "                - set: {var: n, value: one}",
                      "          otherwise:", "            - log: other", "            - set: {var: n, value: other}"]
            count += 5
        else:
            lines.append(f"      - log: step {count}")
            count += 1
    lines.append("      - respond: {status: 200}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not STATIC.is_file():
        if os.environ.get("CI"):
            pytest.fail("the designer's front end is not built (make test builds it)")
        pytest.skip("the designer's front end is not built: make designer")
    folder = tmp_path_factory.mktemp("flows")
    (folder / "route.yaml").write_text(FLOW, encoding="utf-8")
    (folder / "route.test.yaml").write_text(SUITE, encoding="utf-8")
    (folder / "big.yaml").write_text(big_flow(), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def designer_url(folder: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "designer", str(folder), "--port", str(port)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url + "api/files", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None, "the designer did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, designer_url: str, shots: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1500, "height": 900})
    page = context.new_page()
    page.shots = shots  # type: ignore[attr-defined]
    page.set_default_timeout(10_000)
    page.requests_seen = []  # type: ignore[attr-defined]
    page.on("request", lambda request: page.requests_seen.append(request.url))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(designer_url)
    yield page
    assert not errors, errors
    outside = [u for u in page.requests_seen if not u.startswith(designer_url)]
    assert not outside, f"requests left 127.0.0.1: {outside}"
    context.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: a temporary folder, or the one DESIGNER_SCREENSHOTS names (docs)."""
    chosen = os.environ.get("DESIGNER_SCREENSHOTS")
    if chosen:
        folder = Path(chosen) if Path(chosen).is_absolute() else REPO / chosen
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path_factory.mktemp("screenshots")


def shot(page: Any, name: str, *, fit_view: bool = True) -> None:
    fit = page.locator(".react-flow__controls-fitview")
    if fit_view and fit.count():
        fit.click()
        page.wait_for_timeout(300)
    page.screenshot(path=str(page.shots / f"designer-{name}.png"), type="png")


def open_file(page: Any, name: str) -> None:
    page.select_option("[data-testid=file]", name)
    page.wait_for_selector("[data-testid^=step-]")


def drag(page: Any, source: str, target: str, then: str) -> None:
    """An HTML5 drag, tried again if the browser dropped it (a drag that lands nowhere edits nothing)."""
    for attempt in range(3):
        page.drag_and_drop(source, target)
        try:
            page.wait_for_selector(then, timeout=5_000)
            return
        except Exception:
            if attempt == 2:
                raise


def when_slot(index: int) -> str:
    return f"[data-testid='slot-flows.route.steps.0.choice.when.0.steps-{index}']"


def test_draw_edit_save_reload_keyboard_and_try(page: Any, folder: Path) -> None:
    open_file(page, "route.yaml")
    shot(page, "canvas")

    # drag a log step from the palette into the gold branch, after its set step
    new_step = "[data-testid='step-flows.route.steps.0.choice.when.0.steps.1']"
    drag(page, "[data-testid=palette-log]", when_slot(1), new_step)
    page.click(new_step)
    field = page.locator("[data-testid=step-form] [data-testid=field-value]")
    field.fill("gold order ${payload.id")
    page.wait_for_selector("[data-testid=step-form] .error")  # checked as one types: an unclosed ${
    field.fill("gold order ${payload.id}")
    field.press("Enter")
    page.wait_for_function("document.querySelector(\"[data-testid='source']\").innerText.includes('gold order')")
    shot(page, "form")
    page.click("[data-testid=save]")
    page.wait_for_selector("[data-testid=status]:has-text('saved')")
    after_drag = FLOW.replace("                - set: {var: tier, value: gold}   # gold first\n",
                              "                - set: {var: tier, value: gold}   # gold first\n"
                              "                - log: gold order ${payload.id}\n")
    assert (folder / "route.yaml").read_text(encoding="utf-8") == after_drag

    # reload, and the same from the keyboard: into the otherwise branch this time
    page.reload()
    open_file(page, "route.yaml")
    canvas = page.locator("[data-testid=canvas]")
    canvas.focus()
    target = "[data-testid='slot-flows.route.steps.0.choice.otherwise-1']"
    for _ in range(40):
        page.keyboard.press("ArrowDown")
        if page.locator(f"{target}.selected").count():
            break
    assert page.locator(f"{target}.selected").count() == 1
    page.keyboard.press("/")
    page.keyboard.type("log")
    page.keyboard.press("Enter")
    inserted = "[data-testid='step-flows.route.steps.0.choice.otherwise.1']"
    page.wait_for_selector(f"{inserted}.selected")
    page.keyboard.press("Enter")  # into the form
    page.keyboard.press("Control+a")
    page.keyboard.type("plain order")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector(\"[data-testid='source']\").innerText.includes('plain order')")
    page.keyboard.press("Escape")
    # copy, paste, undo, redo, delete: all from the keyboard
    page.keyboard.press("Control+c")
    page.keyboard.press("Control+v")
    copy = "[data-testid='step-flows.route.steps.0.choice.otherwise.2']"
    page.wait_for_selector(copy)
    page.keyboard.press("Control+z")
    page.wait_for_selector(copy, state="detached")
    page.keyboard.press("Control+Shift+z")
    page.wait_for_selector(copy)
    page.keyboard.press("Delete")
    page.wait_for_selector(copy, state="detached")
    page.keyboard.press("Control+s")
    page.wait_for_selector("[data-testid=status]:has-text('saved')")
    after_keys = after_drag.replace("            - set: {var: tier, value: plain}\n",
                                    "            - set: {var: tier, value: plain}\n"
                                    "            - log: plain order\n")
    assert (folder / "route.yaml").read_text(encoding="utf-8") == after_keys

    # move a step across branches by dragging it: its text goes with it
    drag(page, "[data-testid='step-flows.route.steps.0.choice.otherwise.1']", when_slot(0),
         "[data-testid='step-flows.route.steps.0.choice.when.0.steps.0'][data-kind=log]")
    assert page.locator("[data-testid='step-flows.route.steps.0.choice.otherwise.1']").count() == 0
    page.click("[data-testid=undo]")
    page.wait_for_selector("[data-testid='step-flows.route.steps.0.choice.otherwise.1']")

    # typing in the YAML view redraws the canvas
    page.click("[data-testid=source] .cm-content")
    page.keyboard.press("Control+End")
    page.keyboard.insert_text("    on_error:\n      - log: typed in the YAML view\n")
    page.wait_for_selector("[data-testid='step-flows.route.on_error.0']")
    shot(page, "yaml")
    page.click("[data-testid=undo]")
    page.wait_for_selector("[data-testid='step-flows.route.on_error.0']", state="detached")

    # a step that would not load is marked with the loader's message
    page.click("[data-testid='step-flows.route.steps.0.choice.otherwise.0']")
    value = page.locator("[data-testid=step-form] [data-testid='field-value']")
    value.fill("${vars.}")  # the form lets it through; the loader's expression compiler does not
    value.press("Enter")
    page.wait_for_selector("[data-testid='step-flows.route.steps.0.choice.otherwise.0'].has-problem")
    assert "route.yaml:" in page.locator("[data-testid=problems]").inner_text()
    shot(page, "problem")
    page.click("[data-testid=undo]")
    page.wait_for_selector("[data-testid=problem-count]:has-text('0 problems')")

    # try it: the suite's case, with its mocks; the branch taken and a step's message
    page.click("[data-testid=tab-try]")
    page.click("[data-testid=try-run]")
    page.wait_for_selector("[data-testid=try-status]:has-text('200')")
    page.wait_for_selector("[data-testid='lane-flows.route.steps.0.choice.when.0.steps'].taken")
    assert page.locator("[data-testid='lane-flows.route.steps.0.choice.otherwise'].taken").count() == 0
    page.click("[data-testid='step-flows.route.steps.0.choice.when.0.steps.0']")
    assert json.loads(page.locator("[data-testid=record-vars]").inner_text()) == {"tier": "gold"}
    shot(page, "try")
    page.fill("[data-testid=case-name]", "recorded from the designer")
    page.click("[data-testid=save-case]")
    page.wait_for_selector("[data-testid=status]:has-text('saved')")
    assert "recorded from the designer" in (folder / "route.test.yaml").read_text(encoding="utf-8")
    assert (folder / "route.test.yaml").read_text(encoding="utf-8").startswith(SUITE)


def drag_frames(page: Any, x: float, y: float, dx: float, dy: float) -> tuple[float, bool]:
    """Frames per second painted while the pointer drags from (x, y) in 120 moves, and whether
    the view moved.  Frames are counted by requestAnimationFrame over the page's own clock."""
    transform = "getComputedStyle(document.querySelector('.react-flow__viewport')).transform"
    before = page.evaluate(transform)
    page.evaluate("""() => { window.__frames = []; window.__counting = true;
        const tick = (t) => { window.__frames.push(t); if (window.__counting) requestAnimationFrame(tick); };
        requestAnimationFrame(tick); }""")
    page.mouse.move(x, y)
    page.mouse.down()
    page.evaluate("window.__dragStart = performance.now()")
    for i in range(120):
        page.mouse.move(x + (i % 40) * dx - 20 * dx, y + (i % 60) * dy)
        page.wait_for_timeout(8)
    page.mouse.up()
    frames = page.evaluate("""() => { window.__counting = false;
        const seconds = (performance.now() - window.__dragStart) / 1000;
        return window.__frames.filter((t) => t >= window.__dragStart).length / seconds; }""")
    return round(frames, 1), page.evaluate(transform) != before


def test_a_200_step_flow_opens_and_pans_smoothly(page: Any, folder: Path) -> None:
    page.wait_for_selector("[data-testid=file]")
    page.evaluate("window.__t0 = performance.now()")
    page.select_option("[data-testid=file]", "big.yaml")
    page.wait_for_function("document.querySelectorAll('.step').length >= 200")
    opened_ms = page.evaluate("performance.now() - window.__t0")
    layout_ms = page.evaluate("window.__designerLayoutMs")
    steps = page.evaluate("document.querySelectorAll('.step').length")
    page.wait_for_timeout(300)
    zoom = page.evaluate("getComputedStyle(document.querySelector('.react-flow__viewport')).transform")
    assert zoom.startswith("matrix(0.6,")  # a long flow starts readable at its top, not fitted whole
    shot(page, "200-steps", fit_view=False)
    dom_elements = page.evaluate("document.querySelectorAll('.react-flow *').length")

    # drag the canvas (a pan) from an empty place, then drag a step over the slots, ~120 pointer
    # moves each, counting the frames the page painted meanwhile (requestAnimationFrame)
    box = page.locator(".react-flow__pane").bounding_box()
    pan_fps, moved = drag_frames(page, box["x"] + box["width"] - 80, box["y"] + box["height"] / 2, 6, 4)
    assert moved, "the pan did not move the view"
    step = page.locator("[data-testid='step-flows.big.steps.1']").bounding_box()
    step_fps, _ = drag_frames(page, step["x"] + 30, step["y"] + 12, 1, 5)
    report = {"steps_drawn": steps, "open_and_layout_ms": round(opened_ms, 1), "layout_ms": round(layout_ms, 2),
              "pan_fps": pan_fps, "step_drag_fps": step_fps, "canvas_elements": dom_elements}
    print("designer performance:", json.dumps(report))
    (REPO / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "benchmarks" / "results" / "designer.json").write_text(json.dumps(report) + "\n")
    assert steps >= 200

"""``--html``: one self-contained page per analysis, checked as data and in a real (headless) browser.

The browser tests drive the system Chromium (Debian's ``chromium`` package; ``.ci/run`` installs it)
through playwright; they skip, saying why, only when playwright or a Chromium binary cannot be found.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import onnx
import pytest

import frontends
import graphcore
from tests.onnx_builder import G
from tests.test_cli_erase import nested, stacked
from tests.test_onnx_patterns import _head, residual
from zigraph.cli import main
from zigraph.html_view import MAX_ITEMS, build_html, view_data


def run(argv: list[Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def page_data(html: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="zigraph-data">(.*?)</script>', html, re.S)
    assert m, "the page carries no data"
    return json.loads(m.group(1))


def long_chain(blocks: int) -> onnx.ModelProto:
    """``blocks`` residual MLP blocks (5 operators each) with flat operator names."""
    g = G()
    x = g.input("x", [1, 4])
    for i in range(blocks):
        h = g.op("Relu", [g.gemm(x, 4, 4, name=f"blocks.{i}.fc1")])
        x = g.op("Relu", [g.op("Add", [x, g.gemm(h, 4, 4, name=f"blocks.{i}.fc2")])])
    g.output(x)
    return g.model()


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "residual.onnx"
    onnx.save(residual().model(), str(path))
    return path


# -- the page as data -----------------------------------------------------------------------------


def test_analyze_html_is_self_contained_and_carries_the_report(model_path, tmp_path, capsys):
    out, js = tmp_path / "view.html", tmp_path / "r.json"
    code, stdout, err = run(["analyze", model_path, "--html", out, "--json", js], capsys)
    assert code == 0, err
    assert f"html:   {out}" in stdout
    html = out.read_text(encoding="utf-8")
    # nothing is fetched: no external scripts, styles, fonts or images, and a CSP that forbids them
    assert not re.search(r"<(script|link|img|iframe)[^>]*\b(src|href)=", html)
    assert "default-src 'none'" in html
    assert "cytoscape" in html and "dagre" in html
    report = json.loads(js.read_text())
    data = page_data(html)
    names = [n[0] for n in data["nodes"]]
    assert len(names) == report["num_nodes"]
    assert [g["id"] for g in data["groups"]] == [g["id"] for g in report["groups"]]
    for row, g in zip(data["groups"], report["groups"]):
        assert sorted(names[i] for i in row["nodes"]) == sorted(g["nodes"])
        assert row["prunable"] == g["prunable"] and row["num_params"] == g["num_params"]
        # every parameter axis of the group is listed with its exact indices
        assert {(s[0], s[1]) for s in row["slices"]} == {(p["name"], p["axis"]) for p in g["params"]}
        assert all(s[3] == g["size"] for s in row["slices"])
    assert data["result"] is None


def test_prune_html_shows_what_was_removed_and_the_verification(model_path, tmp_path, capsys):
    out, small = tmp_path / "p.html", tmp_path / "small.onnx"
    code, _, err = run(["prune", model_path, "--sparsity", "0.5", "-o", small, "--html", out], capsys)
    assert code == 0, err
    data = page_data(out.read_text(encoding="utf-8"))
    res = data["result"]
    assert res["verification"]["passed"] is True and res["zigs_removed"] > 0
    # each removed ZIG is counted in exactly the group it belongs to
    assert sum(g["removed"] for g in data["groups"]) == res["zigs_removed"]
    assert all(g["removed"] == 0 for g in data["groups"] if not g["prunable"])
    assert data["removed"]["slices"] > 0


def test_erase_html_marks_erased_structures_and_nesting(tmp_path, capsys):
    src, out, small = tmp_path / "n.onnx", tmp_path / "e.html", tmp_path / "small.onnx"
    onnx.save(nested(), str(src))
    code, _, err = run(["erase", src, "--sparsity", "1", "-o", small, "--html", out], capsys)
    assert code == 0, err
    data = page_data(out.read_text(encoding="utf-8"))
    assert data["mode"] == "erase"
    erased = set(data["result"]["structures_erased"])
    assert erased and {g["id"] for g in data["groups"] if g["removed"]} == erased
    assert any(g["parent"] is not None for g in data["groups"]), "the nested structure has its parent"


def test_analyze_erase_mode_html(tmp_path, capsys):
    src, out = tmp_path / "s.onnx", tmp_path / "e.html"
    onnx.save(stacked(), str(src))
    code, _, err = run(["analyze", src, "--mode", "erase", "--html", out], capsys)
    assert code == 0, err
    data = page_data(out.read_text(encoding="utf-8"))
    assert data["mode"] == "erase" and sum(g["prunable"] for g in data["groups"]) >= 4


def test_html_to_an_unwritable_place_is_a_clear_error(model_path, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(["analyze", model_path, "--html", blocker / "view.html"], capsys)
    assert code == 2 and err.startswith("zigraph: error:") and "Traceback" not in err


def test_names_cannot_break_out_of_the_page():
    g = G()
    x = g.input("x", [1, 4, 8, 8])
    y = g.op("Relu", [g.conv(x, 4, 8, name="conv1")])
    g.nodes[-1].name = "</script><b>{{APP}}"
    _head(g, g.conv(y, 8, 6, name="conv2"), 6)
    graph = frontends.load(g.model())
    a = graphcore.analyze(graph)
    html = build_html(graph, a.report(), a)
    assert html.count("</script>") == 3  # data, libraries, app
    assert "</script><b>" not in html
    assert any(n[0] == "</script><b>{{APP}}" for n in page_data(html)["nodes"])


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 10 000-operator graph, its analysis and its page, built once for the tests below."""
    t0 = time.perf_counter()
    graph = frontends.load(long_chain(2000))
    a = graphcore.analyze(graph)
    report = a.report()
    data = view_data(graph, report, a)
    out = tmp_path_factory.mktemp("big") / "big.html"
    out.write_text(build_html(graph, report, a), encoding="utf-8")
    return {"report": report, "data": data, "path": out, "seconds": time.perf_counter() - t0}


def test_clusters_bound_what_one_box_holds_on_a_10k_graph(big):
    data = big["data"]
    assert len(data["nodes"]) == 10000
    assert big["seconds"] < 120  # generous: load, analysis and page together, on a slow CI box
    clusters, where = data["clusters"], data["node_cluster"]
    items = [0] * len(clusters)
    for parent in (c[1] for c in clusters[1:]):
        items[parent] += 1
    for c in where:
        items[c] += 1
    assert max(items) <= MAX_ITEMS
    assert clusters[0][2] == 10000  # the root holds every operator, each in exactly one place
    assert len(where) == 10000 and all(0 <= c < len(clusters) for c in where)


# -- the page in a real browser -------------------------------------------------------------------


def _chromium() -> str | None:
    for name in (os.environ.get("ZIGRAPH_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name) or (name if os.path.isfile(name) else None)):
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
    path = _chromium()
    if path is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set ZIGRAPH_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield b
        b.close()


class Page:
    """One opened view plus everything it logged and requested."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.console: list[tuple[str, str]] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.console.append(("error", str(e))))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = path.resolve().as_uri()
        self.page.goto(self.url)
        self.page.wait_for_selector("body[data-ready='1']", timeout=60_000)

    def js(self, expr: str) -> Any:
        return self.page.evaluate(expr)

    def wait_until(self, expr: str, seconds: float = 20) -> None:
        # polled from here: the page's CSP forbids the eval that playwright's wait_for_function needs
        end = time.monotonic() + seconds
        while not self.js(expr):
            assert time.monotonic() < end, f"timed out waiting for {expr}"
            self.page.wait_for_timeout(50)

    def assert_clean(self) -> None:
        assert [m for m in self.console if m[0] in ("error", "warning")] == []
        assert self.requests == [self.url]


def test_browser_page_loads_table_rows_and_click_highlights_members(browser, model_path, tmp_path, capsys):
    out, js = tmp_path / "view.html", tmp_path / "r.json"
    assert run(["analyze", model_path, "--html", out, "--json", js], capsys)[0] == 0
    report = json.loads(js.read_text())
    view = Page(browser, out)
    rows = view.page.locator("tr.group-row")
    assert rows.count() == len(report["groups"])
    assert [int(x) for x in rows.evaluate_all("rs => rs.map(r => r.dataset.id)")] == [
        g["id"] for g in report["groups"]
    ]
    seen = set()
    for g in report["groups"]:
        view.page.click(f'tr.group-row[data-id="{g["id"]}"]')
        got = view.js("zigraphView.highlighted()")
        assert got == sorted(g["nodes"]), f"group {g['id']}"
        assert f"group {g['id']}" in view.page.inner_text("#details")
        for p in g["params"]:
            assert p["name"] in view.page.inner_text("#details")
        seen.add(tuple(got))
    assert len(seen) > 1  # different groups light up different operators
    # sorting by parameters puts the largest group first
    view.page.click('th[data-key="num_params"]')
    first = int(rows.first.get_attribute("data-id"))
    assert first == max(report["groups"], key=lambda g: g["num_params"])["id"]
    # search by op type lights every Conv and keeps the groups that touch one
    view.page.fill("#search", "conv")
    view.wait_until("document.getElementById('status').textContent.includes('match')")
    convs = sum(1 for n in frontends.load(str(model_path)).nodes if n.op == "Conv")
    assert view.js("zigraphView.cy.nodes('.hit').length") == convs
    # search by parameter name keeps exactly the groups holding it
    view.js("document.getElementById('status').textContent = ''")
    view.page.fill("#search", "conv3.weight")
    view.wait_until("document.getElementById('status').textContent.includes('match')")
    holders = {
        str(g["id"]) for g in report["groups"] if any(p["name"] == "conv3.weight" for p in g["params"])
    }
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.id)")) >= holders
    shot = tmp_path / "view.png"
    view.page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    view.assert_clean()


def test_browser_prune_and_erase_pages_show_the_result(browser, model_path, tmp_path, capsys):
    out, small = tmp_path / "p.html", tmp_path / "small.onnx"
    assert run(["prune", model_path, "--sparsity", "0.5", "-o", small, "--html", out], capsys)[0] == 0
    view = Page(browser, out)
    assert view.page.inner_text("#verdict") == "PASSED"
    assert view.page.locator("tr.gone").count() >= 1
    view.assert_clean()
    out_nv = tmp_path / "nv.html"
    argv = [
        "prune",
        model_path,
        "--sparsity",
        "0.5",
        "-o",
        tmp_path / "nv.onnx",
        "--no-verify",
        "--html",
        out_nv,
    ]
    assert run(argv, capsys)[0] == 0
    view = Page(browser, out_nv)
    assert view.page.inner_text("#verdict") == "not verified"
    view.assert_clean()
    src, out_e = tmp_path / "n.onnx", tmp_path / "e.html"
    onnx.save(nested(), str(src))
    assert run(["erase", src, "--sparsity", "1", "-o", tmp_path / "e.onnx", "--html", out_e], capsys)[0] == 0
    data = page_data(out_e.read_text(encoding="utf-8"))
    groups, names = data["groups"], [n[0] for n in data["nodes"]]
    view = Page(browser, out_e)
    assert view.page.inner_text("#verdict") == "PASSED"
    gone = view.page.locator("tr.gone").evaluate_all("rs => rs.map(r => +r.dataset.id)")
    assert sorted(gone) == sorted(data["result"]["structures_erased"])
    child = next(g for g in groups if g["parent"] is not None)
    parent = next(g for g in groups if g["id"] == child["parent"])
    view.page.click(f'tr.group-row[data-id="{parent["id"]}"]')
    assert view.js("zigraphView.highlighted()") == sorted(names[i] for i in parent["nodes"])
    inside, grew = {parent["id"]}, True
    while grew:  # the structures nested in the parent, at any depth
        grew = False
        for g in groups:
            if g["parent"] in inside and g["id"] not in inside:
                inside.add(g["id"])
                grew = True
    inner = sorted({names[i] for g in groups if g["id"] in inside - {parent["id"]} for i in g["nodes"]})
    assert inner  # drawn orange inside the parent's red
    assert view.js("zigraphView.cy.nodes('.nested').map(n => n.data('name')).sort()") == inner
    view.assert_clean()


def test_browser_10k_graph_opens_collapsed_and_stays_usable(browser, big):
    report = big["report"]
    view = Page(browser, big["path"])
    drawn = view.js("zigraphView.drawnCount()")
    assert 0 < drawn <= 200, drawn  # a few boxes, not 10k operators
    g = next(g for g in report.groups if g.prunable and g.id > 1000)
    view.js(f"zigraphView.selectGroupById({g.id})")  # opens the boxes hiding its operators
    assert view.js("zigraphView.highlighted()") == sorted(g.nodes)
    assert view.js("zigraphView.drawnCount()") <= 1500
    assert view.page.is_disabled("#expand-all")
    view.assert_clean()

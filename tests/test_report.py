"""The run report: written at the end of every run and by the CLI, opened in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from flows.artifacts import artifact_key
from flows.cli.report import main as report_main
from flows.online import online_inference
from flows.report import run_report
from sbi_rounds.config import RunConfig
from sbi_rounds.diagnostics import stop_label
from sbi_rounds.report.document import format_number
from sbi_rounds.report.table import ROUND_COLUMNS
from sbi_rounds.store import RunStore, Stage

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, prefect_server):
    """A flow run asked for 3 rounds that the stopping rule ends after round 2."""
    tmp = tmp_path_factory.mktemp("report")
    np.save(tmp / "reference.npy", np.random.default_rng(0).normal([0.5, -0.3], 0.1, (400, 2)))
    config = RunConfig(
        xobs=[0.5, -0.3],
        rounds=3,
        simulations_per_round=200,
        run_dir=str(tmp / "runs"),
        run_id="checked-run",
        parameter_names=["mu", "nu"],
        training={"max_epochs": 8, "batch_size": 100, "checkpoint_every": 0},
        network={"hidden_features": 20, "num_transforms": 2},
        posterior={"num_samples": 200},
        logger={"backend": "none"},
        cluster={"workers": 1, "chunk_size": 100},
        diagnostics={
            "predictive_simulations": 100,
            "map_iterations": 30,
            "calibration_simulations": 40,
            "calibration_posterior_samples": 100,
            "reference": str(tmp / "reference.npy"),
            "true_parameters": [0.5, -0.3],
            "stop_when_stable": True,
            "stable_mean_shift": 100.0,  # any change counts as stable: stop after round 2
            "stable_width_change": 100.0,
            "stable_rounds": 1,
        },
    )
    return config, online_inference(config)


def test_the_flow_checks_every_round_stops_when_stable_and_writes_the_report(finished_run):
    config, result = finished_run
    assert result["stopped_early"].startswith("stopped after round 2 of 3: the posterior was")
    assert [row["round"] for row in result["rounds"]] == [1, 2]
    store = RunStore.open(config.run_path)
    assert store.rounds() == [1, 2] and store.stage(2) == Stage.DONE
    assert store.calibration(1).valid == 40
    assert store.diagnostics(2).movement.max_mean_shift is not None
    report = Path(result["report"])
    assert (
        report == config.run_path.parent / "report" / "report.html"
        and report.stat().st_size > 10_000
    )
    # The same command again stops at the same round, without a third one or new checks.
    checks = [store.diagnostics(r) for r in (1, 2)]
    again = online_inference(config)
    assert again["stopped_early"] == result["stopped_early"]
    assert store.rounds() == [1, 2]
    assert [store.diagnostics(r) for r in (1, 2)] == checks


def test_the_round_artifacts_show_the_checks_and_the_report_flow_writes_the_report(
    finished_run, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    config, _ = finished_run
    key = artifact_key(config.resolved_run_id, "posterior")
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    first, second = sorted(artifacts, key=lambda a: a.created)  # the rerun published none
    images = r"!\[[^]]*\]\(data:image/png;base64,[A-Za-z0-9+/=]{1000,}\)"
    assert "## Posterior predictive check" in first.data
    assert "## Calibration of round 1" in first.data
    assert len(re.findall(images, first.data)) == 3  # pairplot, predictive check, coverage
    assert "| parameter | mean | std | 5% | median | 95% | MAP |" in second.data
    assert "**Change from round 1:** largest mean shift" in second.data
    assert "**C2ST against the reference samples:**" in second.data
    assert "Calibration" not in second.data and len(re.findall(images, second.data)) == 2
    out = run_report(str(config.run_path.parent), str(tmp_path / "from-prefect.html"))
    assert out == str(tmp_path / "from-prefect.html") and Path(out).stat().st_size > 10_000


class _Page(HTMLParser):
    """Tables (by id: rows of ``(text, data-value)`` cells) and image sources of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self.images: list[dict[str, str]] = []
        self.external: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._value: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or f"table-{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell, self._value = [], a.get("data-value")
        elif tag == "img":
            self.images.append({k: v or "" for k, v in a.items()})
        for key in ("src", "href"):
            if a.get(key) and not a[key].startswith(("data:", "#")):
                self.external.append(a[key])

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append(("".join(self._cell).strip(), self._value))
            self._cell = None
        elif tag == "table":
            self._table = None


def _text(table: list[list[tuple[str, str | None]]]) -> list[list[str]]:
    return [[text for text, _ in row] for row in table]


def _rounds_header(rows: list[list[str]]) -> list[str]:
    """The round table's column titles: its first header row, with the ``seconds`` group
    replaced by the titles below it (``train`` -> ``train (s)``)."""
    top, below = rows[0], rows[1]
    assert top[-1] == "seconds" and below == [c.name for c in ROUND_COLUMNS if c.unit == "s"]
    return top[:-1] + [f"{name} (s)" for name in below]


def test_the_report_cli_writes_one_self_contained_file_with_the_run_numbers(
    finished_run, tmp_path, capsys
):
    config, _ = finished_run
    out = tmp_path / "copy" / "report.html"
    assert report_main([str(config.run_path.parent), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out}"
    page = _Page()
    page.feed(out.read_text())
    assert page.external == []  # nothing outside the file: every figure is a data: URI
    # the final pairplot, the rounds overlaid, loss curves, 2 pairplots, 2 predictive checks,
    # 2 calibration figures
    assert len(page.images) == 9
    assert [i["alt"] for i in page.images[:2]] == [
        "Posterior of round 2, axes fitted to the samples",
        "Posterior marginals of every round, overlaid",
    ]
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:4] == b"\x89PNG"
    store = RunStore.open(config.run_path)
    header, rounds = _rounds_header(_text(page.tables["rounds"])), _text(page.tables["rounds"])[2:]
    assert header == [c.title for c in ROUND_COLUMNS]
    for r, row in zip((1, 2), rounds, strict=True):
        cells = dict(zip(header, row, strict=True))
        counts, summary = store.counts(r), store.training_summary(r)
        assert cells["round"] == str(r) and cells["stage"] == "done"
        assert cells["simulations"] == str(counts.simulations) == "200"
        assert cells["valid"] == str(counts.valid)
        assert cells["epochs"] == str(summary.epochs)
        assert cells["best validation loss"] == format_number(summary.best_val_loss)
        assert cells["stopped by"] == stop_label(summary) and cells["network"] in ("nsf", "maf")
        assert cells["train (s)"] == f"{store.timings(r).train:.2f}"  # seconds: 2 decimals
    posterior = store.diagnostics(2).posterior
    table = page.tables["posterior-2"]
    assert [row[0][0] for row in table[1:]] == ["mu", "nu"]
    for row, name in zip(table[1:], ("mu", "nu"), strict=True):
        values = {head: value for (head, _), (_, value) in zip(table[0], row, strict=True)}
        assert float(values["mean"]) == posterior[name].mean
        assert float(values["MAP"]) == posterior[name].map
        assert float(values["true"]) == posterior[name].truth
    assert {"predictive-1", "predictive-2", "movement", "c2st", "calibration", "coverage"} <= set(
        page.tables
    )
    c2st = store.diagnostics(1).c2st.accuracy
    assert float(page.tables["c2st"][1][1][1]) == c2st
    text = unescape(out.read_text())
    assert "For SNPE the loss itself changes" in text and 'id="warnings"' in text
    assert "report written with" in text and "run file created with" in text
    assert "stopped after round 2 of 3" in text and '"stop_when_stable": true' in text


def test_the_report_cli_says_what_is_wrong_with_its_argument(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2
    assert "holds no run.h5" in capsys.readouterr().err
    (tmp_path / "run.h5").write_text("not hdf5")
    assert report_main([str(tmp_path / "run.h5")]) == 2
    assert "not a readable HDF5 run file" in capsys.readouterr().err


# --- a real browser -------------------------------------------------------------------------
def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "headless Chromium is not installed: install Debian's package with "
        "`apt-get install -y chromium` (.ci/run does); no browser is downloaded at test time"
    )


class _DevTools:
    """A minimal Chrome DevTools Protocol client over the page's websocket."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(url, max_size=None, open_timeout=30)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 60, **params: object) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=timeout))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.events:
                if message.get("method") == event:
                    return message
            self.events.append(json.loads(self.ws.recv(timeout=deadline - time.monotonic())))


_INSPECT = """JSON.stringify({
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,
                                                  width: i.naturalWidth, height: i.naturalHeight})),
  tables: Object.fromEntries(Array.from(document.querySelectorAll("table[id]")).map(t =>
    [t.id, Array.from(t.rows).map(r => Array.from(r.cells).map(c => c.innerText.trim()))])),
  title: document.title,
  widths: {page: document.body.clientWidth,
           rounds: document.getElementById("rounds").getBoundingClientRect().width},
})"""


@pytest.mark.slow
def test_the_report_opens_in_headless_chromium_with_every_image_and_the_numbers(
    finished_run, tmp_path
):
    executable = _chromium()
    config, result = finished_run
    profile = tmp_path / "profile"
    browser = subprocess.Popen(
        [
            executable,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--window-size=1280,900",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert browser.poll() is None, f"chromium exited with status {browser.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        from urllib.request import urlopen

        with urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as answer:
            targets = json.load(answer)
        page = next(t for t in targets if t["type"] == "page")
        tools = _DevTools(page["webSocketDebuggerUrl"])
        tools.call("Page.enable")
        report = Path(result["report"]).resolve()
        tools.call("Page.navigate", url=report.as_uri())
        tools.wait_for("Page.loadEventFired")
        found = json.loads(
            tools.call("Runtime.evaluate", expression=_INSPECT, returnByValue=True)["result"][
                "value"
            ]
        )
        size = tools.call("Page.getLayoutMetrics")["cssContentSize"]
        shot = tools.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )
        tools.ws.close()
    finally:
        browser.terminate()
        browser.wait(timeout=30)
    screenshot = tmp_path / "report.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot of the report: {screenshot}")
    assert screenshot.read_bytes()[:4] == b"\x89PNG" and screenshot.stat().st_size > 50_000
    assert found["title"] == f"sbi-rounds run {config.resolved_run_id}"
    assert len(found["images"]) == 9
    # what the posterior is comes first: after the run's facts, the final posterior
    assert list(found["tables"])[:2] == ["facts", "final-posterior-table"]
    facts = dict((row[0], row[1]) for row in found["tables"]["facts"])
    assert "sbi 0.27" in facts["report written with"] and facts["host"]
    for image in found["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    store = RunStore.open(config.run_path)
    # the round table fits the 1280-pixel window: every column in view, none scrolled away
    assert found["widths"]["rounds"] <= found["widths"]["page"], found["widths"]
    header, rows = _rounds_header(found["tables"]["rounds"]), found["tables"]["rounds"][2:]
    assert len(rows) == 2
    for r, row in zip((1, 2), rows, strict=True):
        cells = dict(zip(header, row, strict=True))
        assert cells["simulations"] == str(store.counts(r).simulations)
        assert cells["valid"] == str(store.counts(r).valid)
        assert cells["epochs"] == str(store.training_summary(r).epochs)
        assert cells["best validation loss"] == format_number(
            store.training_summary(r).best_val_loss
        )
    header, *rows = found["tables"]["posterior-1"]
    posterior = store.diagnostics(1).posterior
    for row in rows:
        cells = dict(zip(header, row, strict=True))
        assert cells["mean"] == format_number(posterior[cells["parameter"]].mean)
        assert cells["MAP"] == format_number(posterior[cells["parameter"]].map)
    header, *rows = found["tables"]["calibration"]
    calibration = store.calibration(1).parameters
    assert [row[0] for row in rows] == ["mu", "nu"]
    for row in rows:
        assert row[1] == format_number(calibration[row[0]].ks_p_value)

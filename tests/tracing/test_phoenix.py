"""The live viewer check: a run's spans in Arize Phoenix, read back through its API.

``phoenix_live`` starts Phoenix (the ``viewer`` extra: ``make viewer``), sends it two
runs over OTLP/HTTP (content capture on, then off), reads them back and stops it, in a
network namespace of its own when ``unshare -rn`` can make one. Here: the spans are
there, with their OpenInference kinds and token counts; with capture on, the input and
output columns are filled on the run, task and LLM spans; with capture off, no span
has any (but what Phoenix itself derives from an LLM span's response model), nor any
of the program's text.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONTENT_COLUMNS = ("input.value", "input.mime_type", "output.value", "output.mime_type")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("phoenix") is None
    or importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None,
    reason="Arize Phoenix is not installed (`make viewer` installs the viewer extra)",
)


def can_make_a_network_namespace() -> bool:
    if shutil.which("unshare") is None:
        return False
    made = subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False)
    return made.returncode == 0


def run_live_check(workdir: pathlib.Path) -> dict[str, Any]:
    """``phoenix_live``'s report; its process group is killed if it overruns."""
    command = [sys.executable, "-m", "tests.tracing.phoenix_live", str(workdir)]
    if can_make_a_network_namespace():
        command = ["unshare", "-rn", *command, "--namespace"]
    child = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise
    assert child.returncode == 0, err[-4000:]
    report: dict[str, Any] = json.loads(out.splitlines()[-1])
    return report


def test_phoenix_shows_the_runs_spans(tmp_path: pathlib.Path) -> None:
    report = run_live_check(tmp_path)
    print(
        f"Phoenix answered after {report['startup']:.1f} s; sending and reading back "
        f"took {report['checked']:.1f} s"
    )
    # Stopped: Phoenix's process is gone (reaped by the program that started it).
    assert not pathlib.Path(f"/proc/{report['phoenix_pid']}").exists()
    assert report["refused"] == 401  # authentication is on: a read without a token is refused
    if shutil.which("unshare") and sys.platform == "linux":
        assert report["namespace"]

    for name, spans in report["runs"].items():
        kinds = Counter(span["span_kind"] for span in spans)
        assert kinds == {"LLM": 2, "CHAIN": 2}, name  # two generations; the run and a task
        (root,) = [span for span in spans if span["parent_id"] is None]
        assert root["name"] == f"invoke_workflow {name}"
        assert root["attributes"]["gen_ai.workflow.name"] == name
        for span in spans:
            if span["span_kind"] == "LLM":
                attributes = span["attributes"]
                assert attributes["llm.token_count.prompt"] > 0, name
                assert attributes["llm.token_count.completion"] > 0, name
                assert attributes["gen_ai.response.model"] == "scripted"
                assert attributes["gen_ai.output.type"] in ("text", "json")

    for span in report["runs"]["live-on"]:
        attributes = span["attributes"]
        for column in CONTENT_COLUMNS:
            assert attributes.get(column), (span["name"], column)
    llm_outputs = {
        s["attributes"]["output.mime_type"]: s["attributes"]["output.value"]
        for s in report["runs"]["live-on"]
        if s["span_kind"] == "LLM"
    }
    assert json.loads(llm_outputs["application/json"]) == {"name": "Ada"}
    assert llm_outputs["text/plain"] == "hello there"

    for span in report["runs"]["live-off"]:
        attributes = span["attributes"]
        shown = {c: attributes[c] for c in CONTENT_COLUMNS if c in attributes}
        if span["span_kind"] == "LLM":
            # Phoenix fills an LLM span's output column itself from gen_ai.response.model
            # (structural): the model's name, no content.
            assert shown == {
                "output.value": json.dumps({"model": "scripted"}),
                "output.mime_type": "application/json",
            }
        else:
            assert shown == {}, span["name"]
        said = json.dumps(attributes)
        for text in ("Ada", "Say hello", "hello there", "END"):
            assert text not in said, (span["name"], text)

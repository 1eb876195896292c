"""openapi.yaml reads cleanly in the tools other implementers use: Redocly CLI and Spectral.

Both are npm packages that `make openapi-tools` (a prerequisite of `make test`) installs, pinned,
into .tools/ with Debian's Node.js. Without Node.js the tests skip, saying so; with Node.js but
without the tools they fail, since `make test` would have installed them.
The rule sets are the repository's own: redocly.yaml and .spectral.yaml.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
OPENAPI = ROOT / "openapi.yaml"
BIN = ROOT / ".tools" / "node_modules" / ".bin"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None,
    reason="Node.js is not installed: `make openapi-tools` (run by `make test`) installs it",
)


def _tool(name: str) -> Path:
    path = BIN / name
    assert path.exists(), f"{path} is missing: run `make openapi-tools`"
    return path


#: No usage telemetry and no update check: the tests talk to nothing but the files.
QUIET = {"REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"}


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        cwd=ROOT,
        env={**os.environ, **QUIET},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_redocly_lint_reports_nothing() -> None:
    """Redocly's recommended rules (redocly.yaml): no error and no warning."""
    result = _run(_tool("redocly"), "lint", OPENAPI, "--format=json")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    problems = [
        (problem["ruleId"], problem["severity"], problem["message"])
        for problem in report["problems"]
    ]
    assert problems == []


def test_spectral_lint_reports_nothing() -> None:
    """Spectral's spectral:oas rule set (.spectral.yaml): no error, warning or hint."""
    result = _run(
        _tool("spectral"),
        "lint",
        OPENAPI,
        "--ruleset",
        ROOT / ".spectral.yaml",
        "--fail-severity",
        "hint",
        "-f",
        "json",
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # The JSON list, then (without findings) a line of text.
    findings, _ = json.JSONDecoder().raw_decode(result.stdout, result.stdout.index("["))
    assert [(f["code"], ".".join(map(str, f["path"]))) for f in findings] == []


def test_the_lint_catches_a_broken_document(tmp_path: Path) -> None:
    """The tools do read the document: an array without `items` is a Spectral error, an operation
    without `security` a Redocly one (both findings of issue 19)."""
    document = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    inclusion = document["components"]["schemas"]["LeadSummary"]["then"]["properties"]["inclusion"]
    del inclusion["properties"]["proof"]["items"]
    del document["paths"]["/v1/operator"]["get"]["security"]
    broken = tmp_path / "openapi.yaml"
    broken.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    spectral = _run(
        _tool("spectral"), "lint", broken, "--ruleset", ROOT / ".spectral.yaml", "-f", "json"
    )
    assert spectral.returncode != 0 and "array-items" in spectral.stdout
    redocly = _run(_tool("redocly"), "lint", broken, "--config", ROOT / "redocly.yaml")
    assert redocly.returncode != 0 and "security-defined" in redocly.stdout + redocly.stderr

"""docs/configuration.md is generated from Settings and `--check` catches drift (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from relay import configdoc
from relay.config import Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _leaf_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def test_committed_reference_matches_settings() -> None:
    assert configdoc.main(["--check"]) == 0, "run `python -m relay.configdoc`"


def test_every_key_has_a_row_with_default_env_and_description() -> None:
    text = DOC.read_text(encoding="utf-8")
    keys = _leaf_keys(Settings)
    assert [row[0] for row in configdoc.rows()] == keys
    assert "| `window.seconds` | `300` | `RELAY_WINDOW__SECONDS` | Aggregation window" in text
    assert '| `ingest.cors.allow_origins` | `["*"]` | `RELAY_INGEST__CORS__ALLOW_ORIGINS` |' in text
    # A default that depends on the machine is shown as written in the field, not this host's.
    assert "| `origin` | `relay.local/<hostname>` | `RELAY_ORIGIN` |" in text
    # Markdown table cells: a `|` inside a description is escaped.
    assert "format: json\\|discord\\|slack" in text


def test_check_fails_on_drift_and_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "configuration.md"
    assert configdoc.main(["--check", "--out", str(out)]) == 1  # missing
    assert configdoc.main(["--out", str(out)]) == 0
    assert configdoc.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text().replace("Aggregation window", "Window"))
    capsys.readouterr()
    assert configdoc.main(["--check", "--out", str(out)]) == 1
    assert str(out) in capsys.readouterr().err


def test_a_field_without_description_is_refused() -> None:
    class Section(BaseModel):
        documented: int = 1

    class Root(BaseModel):
        section: Section = Section()

    with pytest.raises(ValueError, match=r"section\.documented has no description"):
        list(configdoc.rows(Root))

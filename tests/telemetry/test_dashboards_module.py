"""prod_core.telemetry.dashboards as a module: render() is exactly the committed JSON, main() writes and checks."""

from __future__ import annotations

import json
from pathlib import Path

from prod_core.telemetry.dashboards import DASHBOARDS, OUT_DIR, main, render
from tests.conftest import REPO


def test_render_is_byte_identical_to_the_committed_files() -> None:
    assert OUT_DIR == REPO / "configs" / "grafana" / "dashboards"
    rendered = render()
    assert set(rendered) == set(DASHBOARDS) == {p.name for p in OUT_DIR.glob("*.json")}
    for name, text in rendered.items():
        assert (OUT_DIR / name).read_text(encoding="utf-8") == text, name
        assert json.loads(text)["panels"], name


def test_main_writes_then_check_passes_and_names_a_stale_file(tmp_path: Path, capsys) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(DASHBOARDS)
    assert main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "performance.json").write_text("{}\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["--check", "--out", str(tmp_path)]) == 1
    assert "out of date: performance.json" in capsys.readouterr().err

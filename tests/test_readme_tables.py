"""The README's paper tables are ``python -m fedfomo.report`` output over the committed results, not hand-typed."""

from __future__ import annotations

from pathlib import Path

from fedfomo.report import enriched, load_summaries, readme_results
from fedfomo.tables import build_tables, render, write_into

ROOT = Path(__file__).resolve().parents[1]


def test_every_table_has_its_readme_block_and_the_block_is_current(monkeypatch):
    monkeypatch.chdir(ROOT)  # run_dir in the summaries is relative to the repository root
    tables = render(build_tables(enriched(load_summaries(readme_results(Path("results"))))))
    assert tables, "no paper table built from results/"
    readme = (ROOT / "README.md").read_text()
    text, missing = write_into(readme, tables)
    assert not missing, f"README.md has no <!-- report:NAME --> block for: {', '.join(missing)}"
    assert text == readme, ("README.md tables differ from the committed results: run "
                            "`python -m fedfomo.report --readme README.md`")

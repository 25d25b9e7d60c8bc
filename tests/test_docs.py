"""The repository carries its own copy of the data contract (docs/), kept in step with the team's shared one."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data-contract.md"


def test_docs_hold_the_data_contract_and_readme_links_it():
    assert (ROOT / "docs" / "data-contract.md").read_text().startswith("# Data contract")
    readme = (ROOT / "README.md").read_text()
    assert "(docs/data-contract.md)" in readme and "../shared" not in readme


@pytest.mark.skipif(not SHARED.exists(), reason="no ../shared beside this checkout (a user's clone)")
def test_contract_copy_is_in_step_with_shared():
    assert (ROOT / "docs" / "data-contract.md").read_text() == SHARED.read_text(), (
        "docs/data-contract.md differs from ../shared/data-contract.md: copy it over (cp ../shared/data-contract.md docs/)")

"""The mutation script's mutants still plant their bugs in the code as it is now: a mutant
whose text moved away would plant nothing, and the score would count a bug never tried."""

import pytest

from scripts.mutate import MUTANTS, ROOT, stale_edits


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_every_mutant_still_finds_the_code_it_changes(mutant):
    assert stale_edits(mutant) == []
    for argument in mutant.tests:
        if argument.startswith("tests/"):
            assert (ROOT / argument.split("::")[0]).is_file(), f"{mutant.name} selects {argument}, which is gone"

"""The command line as a new user meets it: limits on the grid, messages that name the
problem, and report files that are never lost."""

from __future__ import annotations

import pytest

from harness.check_command import MAX_BATCH, MAX_SEEDS
from harness.cli import main


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "100000"], f"--seeds must be <= {MAX_SEEDS}, got 100000"),
    (["--seeds", "99999999999999999999"], f"--seeds must be <= {MAX_SEEDS}"),
    (["--batches", "100000000"], f"--batches must be <= {MAX_BATCH}, got 100000000"),
    (["--batches", "1,3", str(MAX_BATCH + 1)], f"--batches must be <= {MAX_BATCH}"),
])
def test_a_huge_grid_is_refused_at_once_with_the_limit(argv, message, capsys) -> None:
    """A huge --seeds ran for ever (and built a list of every run first: gigabytes before the
    first check); a huge --batches allocated tens of GB. Both are usage errors naming the
    limit, before any check runs."""
    assert main(["check", "--only", "Relu", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_the_limits_themselves_are_accepted(capsys) -> None:
    assert main(["check", "--only", "Relu", "--dtype", "float64", "--seeds", "1",
                 "--batches", str(MAX_BATCH), "-q"]) == 0
    assert "PASS: 1 checks" in capsys.readouterr().out


def test_help_states_the_limits(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"seeds per shape, 1 to {MAX_SEEDS}" in out
    assert f"batch sizes, 1 to {MAX_BATCH}" in out

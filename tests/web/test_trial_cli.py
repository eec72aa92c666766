"""`flask --app mfg trial decision-table` (issue [3.7] item 7): the rule's table as a protocol prints it."""

from __future__ import annotations


def test_three_plus_three_table(app):
    result = app.test_cli_runner().invoke(args=["trial", "decision-table"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "  1 of 3: expand" in lines and "  1 of 6: escalate" in lines and "  2 of 6: MTD exceeded" in lines
    assert sum(" of 3: " in line for line in lines) == 4 and sum(" of 6: " in line for line in lines) == 7


def test_boin_table_for_a_target_of_0_3(app):
    result = app.test_cli_runner().invoke(args=["trial", "decision-table", "--rule", "boin", "--target", "0.3"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "BOIN, target DLT rate 0.3: lambda_e = 0.236, lambda_d = 0.359"
    rows = {int(line.split()[0]): line.split()[1:] for line in lines[2:]}
    assert sorted(rows) == list(range(1, 13))
    assert rows[3] == ["0", "1", "2", "3"] and rows[12] == ["2", "3-4", "5", "7"] and rows[1] == ["0", "-", "1", "-"]


def test_a_target_outside_zero_and_one_is_refused(app):
    result = app.test_cli_runner().invoke(args=["trial", "decision-table", "--rule", "boin", "--target", "1.5"])
    assert result.exit_code == 2 and "target" in result.output

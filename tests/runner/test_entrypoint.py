from __future__ import annotations

import pytest

from fetchml.runner.entrypoint import build_command

PY = "/opt/py/bin/python3"


def test_python_script_runs_with_the_given_interpreter() -> None:
    assert build_command("train.py", None, python=PY) == [PY, "train.py"]


def test_shell_script_runs_with_sh() -> None:
    assert build_command("scripts/run.sh", "", python=PY) == ["sh", "scripts/run.sh"]


def test_other_entry_points_are_split_as_a_command_line() -> None:
    assert build_command("torchrun --nproc_per_node 2 train.py", None, python=PY) == [
        "torchrun",
        "--nproc_per_node",
        "2",
        "train.py",
    ]


def test_args_are_shlex_split_and_appended() -> None:
    got = build_command("train.py", "--lr 3e-4 --name 'my run' --tag=\"a b\"", python=PY)
    assert got == [PY, "train.py", "--lr", "3e-4", "--name", "my run", "--tag=a b"]


def test_script_with_inline_arguments_still_uses_its_interpreter() -> None:
    assert build_command("train.py --epochs 2", "--lr 1", python=PY) == [
        PY,
        "train.py",
        "--epochs",
        "2",
        "--lr",
        "1",
    ]


def test_quoted_path_with_spaces_stays_one_word() -> None:
    assert build_command("'my dir/train.py'", None, python=PY) == [PY, "my dir/train.py"]


def test_nothing_is_expanded_by_a_shell() -> None:
    assert build_command("echo", "$HOME; rm -rf / `id`", python=PY) == [
        "echo",
        "$HOME;",
        "rm",
        "-rf",
        "/",
        "`id`",
    ]


@pytest.mark.parametrize("entry", ["", "   ", None, "''"])
def test_empty_entry_point_is_a_clear_value_error(entry: str | None) -> None:
    with pytest.raises(ValueError, match="entry point is empty"):
        build_command(entry, "--x 1", python=PY)


def test_unbalanced_quotes_are_a_value_error_naming_the_line() -> None:
    with pytest.raises(ValueError, match="cannot parse the command line"):
        build_command("train.py", "--name 'unterminated", python=PY)

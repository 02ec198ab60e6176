"""--help reads at 80 columns: prose reflowed by rich, examples kept whole and pasteable."""

import shlex

import typer
from typer.testing import CliRunner

from patchkit.cli.app import app
from patchkit.cli.help_text import fold, reflow

runner = CliRunner()


def _commands(command, path):
    yield path, command
    for name, child in getattr(command, "commands", {}).items():
        yield from _commands(child, [*path, name])


def test_prose_is_joined_and_examples_and_lists_are_kept():
    text = (
        "Title.\n\n    One sentence wrapped\n    at 40 columns.\n\n    Examples:\n\n      patchkit a\n      patchkit b"
    )
    assert reflow(text) == "Title.\n\nOne sentence wrapped at 40 columns.\n\nExamples:\n\n  patchkit a\n  patchkit b"
    assert reflow("- one\n- two") == "- one\n- two"
    assert reflow("\b\nkept\nas is") == "\b\nkept\nas is"


def test_a_long_example_folds_at_arguments_and_still_parses_as_the_same_command():
    line = '  patchkit forget ./sd15 -c "Elon Musk" --category id --images ./musk -o no-musk.safetensors --score -n 3'
    folded = fold(line)
    assert len(folded) > 1 and all(len(part) <= 78 for part in folded)
    assert all(part.endswith(" \\") for part in folded[:-1])
    pasted = "\n".join(folded).replace("\\\n", "")  # what a shell does with a backslash-newline
    assert shlex.split(pasted) == shlex.split(line)  # pasted into a shell, the same words
    assert not any(part.rstrip(" \\").endswith(" -o") for part in folded)  # an option stays beside its value
    row = fold("  search       real vocabulary words found by the model's own denoising loss on the references")
    assert row[1].startswith(" " * 15) and row[1].strip() == "on the references"


def test_no_example_line_is_wrapped_by_the_terminal_at_80_columns():
    root = typer.main.get_command(app)
    for path, command in _commands(root, []):
        kept = [line for paragraph in (command.help or "").split("\n\n") if "\n" in paragraph or paragraph[:1] == " "
                for line in paragraph.split("\n")]  # fmt: skip
        if not kept:
            continue
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80", "NO_COLOR": "1"}, terminal_width=80)
        assert result.exit_code == 0, result.output
        shown = {line.strip() for line in result.output.splitlines()}
        for line in kept:
            assert line.strip() in shown, (path, line)


def test_every_flag_name_has_one_meaning_on_every_command():
    """Issue 16.15: --force used to mean "replace the output" on most commands and "another base" on apply."""
    root = typer.main.get_command(app)
    meanings: dict[str, set[str]] = {}
    for path, command in _commands(root, []):
        for param in getattr(command, "params", []):
            for flag in getattr(param, "opts", []):
                if flag.startswith("--") and flag not in {"--help", "--json"}:
                    meanings.setdefault(flag, set()).add((param.help or "").split(".")[0].split(":")[0])
        if any("--force" in getattr(p, "opts", []) for p in getattr(command, "params", [])):
            raise AssertionError(f"patchkit {' '.join(path)} still offers --force")
    assert meanings["--overwrite"] == {"Replace the output if it exists", "Replace OUT if it exists"}
    assert meanings["--ignore-base"] == {"Apply even where a patch was made for another base fingerprint"}

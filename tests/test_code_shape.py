"""No function in the repo is longer than about a screen or takes more than a handful of parameters, and no line
is wider than the project's 120 columns.

Every tracked .py file is parsed; a function's (or method's) body runs from its first statement after the
docstring to its last line, and its parameters are all of them (``*args`` and ``**kwargs`` one each) but a
leading ``self`` or ``cls``.
"""
import ast
import subprocess

import pytest

from tests.conftest import REPO

MAX_BODY_LINES = 60
MAX_PARAMETERS = 6
MAX_LINE_CHARS = 120


def tracked_python_files() -> list[str]:
    try:
        listed = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    return [name for name in listed.stdout.splitlines() if (REPO / name).is_file()]


def body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = function.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1


def parameter_count(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = function.args
    positional = [a.arg for a in args.posonlyargs + args.args]
    count = len(positional) + len(args.kwonlyargs) + (args.vararg is not None) + (args.kwarg is not None)
    return count - 1 if positional and positional[0] in ("self", "cls") else count


def offences(name: str) -> list[str]:
    tree = ast.parse((REPO / name).read_text(), filename=name)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines, parameters = body_lines(node), parameter_count(node)
            if lines > MAX_BODY_LINES or parameters > MAX_PARAMETERS:
                found.append(f"{name}:{node.lineno} {node.name}(): {lines} lines, {parameters} parameters")
    return found


def test_no_function_is_too_long_or_takes_too_many_parameters():
    found = [offence for name in tracked_python_files() for offence in offences(name)]
    assert not found, (f"over {MAX_BODY_LINES} body lines or {MAX_PARAMETERS} parameters:\n  "
                       + "\n  ".join(found))


def test_no_line_is_too_wide():
    found = [f"{name}:{number} ({len(line)} characters)" for name in tracked_python_files()
             for number, line in enumerate((REPO / name).read_text().splitlines(), 1) if len(line) > MAX_LINE_CHARS]
    assert not found, f"over {MAX_LINE_CHARS} characters:\n  " + "\n  ".join(found)


def test_the_rules_count_what_they_say():
    sample = ('class A:\n'
              '    def method(self, a, b, *rest, key, **options):\n'
              '        """Not counted."""\n'
              '        x = 1\n'
              '        return x\n')
    method = next(node for node in ast.walk(ast.parse(sample)) if isinstance(node, ast.FunctionDef))
    assert parameter_count(method) == 5 and body_lines(method) == 2

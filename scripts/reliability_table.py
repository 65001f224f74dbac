"""Regenerate docs/reliability.md from the reliability suites (run from the repository root):

    python scripts/reliability_table.py

The bad-input rows come from ``CASES`` in tests/test_bad_inputs.py (each row is one test); the fault-injection,
untrusted-weights and data rows are the test functions of tests/test_faults.py, tests/test_untrusted.py and
tests/test_reliability_data.py with the first line of their docstrings (or their names).
"""
from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITES = [("Faults during training (kill -9, full disk, torn files, a second writer)", "tests/test_faults.py"),
          ("Untrusted weights (a planted pickle per loader)", "tests/test_untrusted.py"),
          ("Data preparation (disk full, --overwrite, paths outside the root, silent drops)",
           "tests/test_reliability_data.py")]

HEADER = """# Reliability

What facediff promises, and the cases that check it. Every row below is a test; CI runs all of them
(`python3 -m pytest -q tests`, the README's test command). Run only these suites with

    python3 -m pytest -q tests/test_bad_inputs.py tests/test_faults.py tests/test_untrusted.py tests/test_reliability_data.py

and regenerate this page with `python scripts/reliability_table.py`.

## Promises

- **A run of hours is never lost**: checkpoints are written to a temporary folder, verified by a manifest of
  sizes and SHA-256 hashes written last, and renamed into place; the only good copy is never deleted before its
  replacement is complete; `--resume` takes the newest complete checkpoint (whatever `latest.json` says), so a
  kill -9 or a full disk loses at most one checkpoint interval, and the resumed loss sequence and weights equal an
  uninterrupted run's bit for bit.
- **One writer per run directory**: an OS lock (`flock` on `RUN/.lock`), released by the kernel when the process
  dies; a second `train` on the same `--out` gets one line naming the other process.
- **Good data is never overwritten before the new data is complete**: `data prepare` / `data synth` write into a
  temporary sibling folder with the space allocated up front and swap it in only after `manifest.json` is written.
- **Never unpickle**: every loader reads safetensors + JSON only (diffusers folders with `use_safetensors=True`,
  checkpoints, the estimator, LPIPS weights); a `.bin` / `.pth` is refused with one line.
- **Never read outside the roots given**: `../`, absolute paths, symlinks leaving `--root` and symlink loops are
  skipped with a reason in `manifest.json`.
- **No traceback for a user mistake**: one line `error: ...` naming the file / key / value, exit code 2; an
  unexpected failure prints one line and writes the traceback to a log file (exit 1).
"""


def _load_cases() -> list[tuple[str, str, str]]:
    spec = importlib.util.spec_from_file_location("test_bad_inputs", REPO / "tests" / "test_bad_inputs.py")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "tests"))
    spec.loader.exec_module(mod)
    return mod.CASES


def _tests(path: Path) -> list[tuple[str, str]]:
    tree = ast.parse(path.read_text())
    rows = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            doc = (ast.get_docstring(node) or "").strip().split("\n\n")[0].replace("\n", " ")
            rows.append((node.name.removeprefix("test_").replace("_", " "), doc))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    lines = [HEADER, "## Bad inputs (tests/test_bad_inputs.py)", "",
             "Each command gives exit code 2 and one line on stderr containing the text shown. Placeholders: RUN a "
             "finished run, AE an autoencoder run, DATA a prepared data set, TMP an empty folder, FILE a plain file. "
             "Two property-based fuzzers (hypothesis) add every config field with arbitrary text and `sample` with "
             "arbitrary numbers: a one-line error or a real result, never a traceback, never exit 0 with nothing done.",
             "", "| case | command | the one line contains |", "|---|---|---|"]
    for case, command, expected in _load_cases():
        shown = command.format(run="RUN", ae="AE", data="DATA", tmp="TMP", file="FILE", truncated="TRUNCATED_EXPORT",
                               badindex="EXPORT_WITH_BAD_INDEX")
        lines.append(f"| {_cell(case)} | `facediff {_cell(shown)}` | `{_cell(expected)}` |")
    for title, rel in SUITES:
        path = REPO / rel
        if not path.is_file():
            continue
        lines += ["", f"## {title} ({rel})", "", "| case | what the test asserts |", "|---|---|"]
        lines += [f"| {_cell(name)} | {_cell(doc) or '(see the test)'} |" for name, doc in _tests(path)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    out = REPO / "docs" / "reliability.md"
    out.write_text(render())
    print(f"wrote {out}")

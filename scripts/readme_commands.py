"""Print one of the README's set-up commands: `main` (generate faces with the bundled model) or `test` (the test
suite). Each is the single line of the ```bash block that follows `<!-- setup: NAME -->` in README.md; .ci/run
runs exactly these, and tests/test_readme.py checks that the README has both."""
from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def setup_command(name: str, text: str | None = None) -> str:
    text = README.read_text(encoding="utf-8") if text is None else text
    m = re.search(rf"<!-- setup: {re.escape(name)} -->\s*```bash\n(.*?)```", text, re.S)
    if m is None:
        raise SystemExit(f"README.md: no ```bash block after <!-- setup: {name} -->")
    lines = [line for line in m.group(1).splitlines() if line.strip()]
    if len(lines) != 1:
        raise SystemExit(f"README.md: the setup: {name} block must be one command line, found {len(lines)}")
    return lines[0]


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("main", "test"):
        raise SystemExit("usage: readme_commands.py main|test")
    print(setup_command(sys.argv[1]))

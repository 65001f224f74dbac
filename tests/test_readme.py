"""The README's examples marked `<!-- quick -->` run as written on a fresh install: each ```bash block in its
own empty scratch directory (so a block must make everything it uses), with the facediff of this Python."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
QUICK = re.findall(r"<!-- quick -->\s*```bash\n(.*?)```", README, re.S)


def _id(block: str) -> str:
    first = next(line for line in block.splitlines() if line.strip() and not line.startswith("cat "))
    return " ".join(first.split()[:4])


def test_the_readme_marks_quick_examples():
    assert len(QUICK) >= 8
    text = "\n".join(QUICK)
    for needed in ("--from-png", "facediff info", "eval --prompts", "--save-each", "data sketch"):
        assert needed in text, needed


@pytest.mark.parametrize("block", QUICK, ids=[_id(b) for b in QUICK])
def test_quick_readme_example_runs(block, tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, f"{block}\n--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr

"""The built wheel, installed in a fresh venv and used from outside the repo, has everything facediff needs.

The repo's files (tracked + untracked-but-not-ignored, as ``git ls-files`` sees them) are copied to a temporary
directory and built there (``pip wheel --no-deps --no-build-isolation``): building in the repo itself would leave
``build/`` behind, whose stale copies of deleted modules end up in later wheels and hide a missing file.

The venv is created *without* ``--system-site-packages``; a ``.pth`` file in it lists this interpreter's
site-packages directories as plain paths instead. A plain path is added to ``sys.path`` without processing that
directory's own ``.pth`` files, so the editable install of facediff (``__editable__.facediff-*.pth``, which puts
the repo's ``src`` on ``sys.path`` or installs a meta-path finder) never runs in the venv: whatever the venv
imports as ``facediff`` must come from the wheel. torch, diffusers, ... still come from the system site-packages.
Children run with ``python -I`` (no PYTHONPATH, no user site, no cwd on sys.path) from the temporary directory.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "src" / "facediff"
_IGNORE = shutil.ignore_patterns(".git", "build", "dist", "runs", "out", "__pycache__", "*.egg-info", ".venv",
                                 ".pytest_cache", "*.pyc")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
                                                             "PYTHONUSERBASE", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"))
    return env


def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    shown = " ".join(str(c) if len(str(c)) < 100 else str(c).strip().splitlines()[0] + " ..." for c in cmd)
    assert r.returncode == 0, f"{shown} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r


def _copy_repo(dst: Path) -> None:
    """The files a commit of the working tree would hold (tracked and untracked, minus ignored ones)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True, timeout=60).stdout.decode()
        files = [f for f in out.split("\0") if f and (REPO / f).is_file()]
    except (OSError, subprocess.SubprocessError):
        files = []
    if not files:  # not a git checkout: copy the tree minus build outputs
        shutil.copytree(REPO, dst, ignore=_IGNORE)
        return
    for f in files:
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dst / f)


def _system_site_dirs() -> list[str]:
    user = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    dirs = [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages")) and p != user]
    for p in site.getsitepackages():
        if p not in dirs:
            dirs.append(p)
    return [p for p in dirs if Path(p).is_dir() and Path(p).resolve() != (REPO / "src").resolve()]


def _data_files(src: Path) -> list[str]:
    """Package files the wheel must carry: every module, preset and asset under src/facediff."""
    keep = []
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src).as_posix()
        if p.is_file() and "__pycache__" not in rel and (p.suffix == ".py" or rel.startswith(("presets/", "assets/"))):
            keep.append(rel)
    return keep


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if importlib.util.find_spec("pip") is None or importlib.util.find_spec("venv") is None \
            or importlib.util.find_spec("ensurepip") is None:
        pytest.skip("pip / venv / ensurepip is not available to this interpreter")
    tmp = tmp_path_factory.mktemp("wheel")
    src_copy = tmp / "repo"
    src_copy.mkdir()
    _copy_repo(src_copy)
    wheels = tmp / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels,
          src_copy.resolve()], cwd=tmp, timeout=180)
    (wheel,) = sorted(wheels.glob("facediff-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp, timeout=120)
    py = venv / "bin" / "python"
    purelib = Path(_run([py, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=tmp, timeout=60).stdout.strip())
    (purelib / "_facediff_test_system_site.pth").write_text("\n".join(_system_site_dirs()) + "\n")
    _run([py, "-I", "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel],
         cwd=tmp, timeout=120)
    expected = tmp / "expected.json"
    expected.write_text(json.dumps(_data_files(src_copy / "src" / "facediff")))
    return {"tmp": tmp, "wheel": wheel, "venv": venv, "py": py, "expected": expected}


def test_wheel_lists_modules_presets_and_assets(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    expected = json.loads(installed["expected"].read_text())
    missing = [f for f in expected if f"facediff/{f}" not in names]
    assert not missing, f"the wheel lacks {len(missing)} file(s) of src/facediff: {missing[:20]}"
    for f in ("facediff/presets/tiny-ddpm.toml", "facediff/registry.py", "facediff/config.py",
              "facediff/assets/default_model/model_index.json", "facediff/assets/oracle/model.safetensors",
              "facediff/assets/text_model/model_index.json", "facediff/assets/text_model/tokenizer/tokenizer.json"):
        assert f in names, f
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert not any(n.startswith(("tests/", "configs/", "benchmarks/")) for n in names)


_CHECK_INSTALL = r"""
import json, sys
from pathlib import Path
venv, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
expected = json.loads(Path(sys.argv[3]).read_text())
assert not any(Path(p or '.').resolve() == repo / 'src' for p in sys.path), ('repo src on sys.path', sys.path)
import facediff
print(facediff.__file__)
pkg = Path(facediff.__file__).resolve().parent
assert venv in pkg.parents, f'facediff imported from {pkg}, not from the venv {venv}'
assert repo not in pkg.parents, f'facediff imported from the repo: {pkg}'
missing = [f for f in expected if not (pkg / f).is_file()]
assert not missing, f'not installed: {missing[:20]}'
assert (pkg / 'presets' / 'tiny-ddpm.toml').is_file()
assert (pkg / 'assets' / 'default_model' / 'model_index.json').is_file()
assert (pkg / 'assets' / 'oracle' / 'model.safetensors').is_file()
import facediff.config as config
assert Path(config.__file__).resolve().parent == pkg
assert config.PRESETS_DIR.resolve() == pkg / 'presets', config.PRESETS_DIR
assert 'tiny-ddpm' in config.preset_names(), config.preset_names()
cfg = config.load_config('tiny-ddpm')
assert cfg.kind == 'ddpm', cfg.kind
assert config.load_config('tiny-ddpm.toml') == cfg
print('ok')
"""

_RUN_RECIPE = r"""
import json, sys
from pathlib import Path
venv = Path(sys.argv[1]).resolve()
from facediff.experiments.registry import run_experiment
run_experiment('seed002-baselines', 'out', tiny=True)
assert Path('out/results.json').is_file(), sorted(p.name for p in Path('out').rglob('*'))
json.loads(Path('out/results.json').read_text())
stray = sorted(m.__file__ for n, m in list(sys.modules.items())
               if n.split('.')[0] == 'facediff' and getattr(m, '__file__', None)
               and venv not in Path(m.__file__).resolve().parents)
assert not stray, f'facediff modules loaded from outside the venv: {stray}'
print('ok')
"""


def test_installed_wheel_imports_presets_and_assets_outside_the_repo(installed):
    tmp = installed["tmp"]
    r = _run([installed["py"], "-I", "-c", _CHECK_INSTALL, installed["venv"], REPO, installed["expected"]],
             cwd=tmp, timeout=120)
    assert r.stdout.strip().endswith("ok"), r.stdout
    assert (installed["venv"] / "bin" / "facediff").is_file(), "console script `facediff` not installed"


def test_installed_wheel_runs_a_tiny_recipe(installed):
    tmp = installed["tmp"]
    work = tmp / "recipe"
    work.mkdir(exist_ok=True)
    r = _run([installed["py"], "-I", "-c", _RUN_RECIPE, installed["venv"]], cwd=work, timeout=240)
    assert r.stdout.strip().endswith("ok"), r.stdout
    assert (work / "out" / "results.json").is_file()

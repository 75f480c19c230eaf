"""Binder: the files in ``binder/`` build an environment in which the notebooks run.

mybinder.org builds the repository with repo2docker, which, for this repository:

1. installs the Python that ``binder/runtime.txt`` names, with Jupyter, in a fresh environment;
2. runs ``pip install -r binder/requirements.txt`` from the repository's root, if that file
   exists (it does not: the install needs an environment variable, see step 3);
3. runs ``binder/postBuild`` from the repository's root: it installs the project with its
   ``local`` extra, compiling llama.cpp for a portable CPU baseline.

The fast tests below check those files and the saved notebooks. The slow test repeats the three
steps in a fresh virtual environment made from a copy of the repository, then runs the notebooks
there under nbval, the way ``python -m pytest --nbval notebooks/`` does in the development
environment. Its llama.cpp is a portable build (no ``-march=native``), so the embedded model may
word its replies differently than the build that saved the notebooks: the test also shows that
no compared output depends on the model's words. It compiles llama.cpp from source and downloads
about 170 MB from PyPI: about 3.5 minutes on two idle cores (7 on busy ones). Set
``COPILOT_JUPYTER_BINDER_TEST=0`` to skip it (offline, or for a quick run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from envvars import scrubbed_environ
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

RUN_ENV = "COPILOT_JUPYTER_BINDER_TEST"
#: what repo2docker would not copy into the image, or what a fresh checkout does not have
_NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    ".ruff_cache",
    "*.egg-info",
    "build",
    "dist",
    ".ipynb_checkpoints",
)
#: the developer's Python setup; provider credentials and copilot settings: envvars.CLEARED_ENV
#: (a Binder has none of them)
_PYTHON_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")


def _runtime_version() -> str:
    runtime = (BINDER / "runtime.txt").read_text(encoding="utf-8").strip()
    match = re.fullmatch(r"python-(3\.\d+)", runtime)
    assert match, f"binder/runtime.txt must read python-3.X, not {runtime!r}"
    return match.group(1)


# -------------------------------------------------------------------------------- fast checks


def test_runtime_is_a_python_the_project_supports():
    version = _runtime_version()
    requires = PYPROJECT["project"]["requires-python"]
    assert SpecifierSet(requires).contains(f"{version}.0"), (version, requires)


def test_post_build_installs_the_project_with_the_embedded_model():
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable"
    text = post_build.read_text(encoding="utf-8")
    assert text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text
    install = next(line for line in text.splitlines() if "pip install" in line)
    assert '-e ".[local]"' in install
    # the image runs on other machines than the one that built it: no -march=native
    assert "GGML_NATIVE=OFF" in install
    assert "local" in PYPROJECT["project"]["optional-dependencies"]


def test_there_are_notebooks():
    assert [path.name[:3] for path in NOTEBOOKS] == [
        "01-",
        "02-",
        "03-",
        "04-",
        "05-",
        "06-",
        "07-",
        "08-",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_saved_executed_on_a_throwaway_store(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    setup = "".join(code[0]["source"])
    assert 'os.environ["COPILOT_JUPYTER_HOME"] = ' in setup
    assert "tempfile.TemporaryDirectory(" in setup
    # Saved with its outputs, run once from the top: the outputs are what nbval compares, and
    # {In[n]} in 03-magics.ipynb counts on these numbers.
    assert [cell["execution_count"] for cell in code] == list(range(1, len(code) + 1))
    # An error only where a cell is meant to fail (07-notebook-context's %copilot fix needs one):
    # tagged raises-exception, which nbval and nbconvert --execute both honour.
    assert not any(
        output.get("output_type") == "error"
        for c in code
        if "raises-exception" not in c["metadata"].get("tags", [])
        for output in c["outputs"]
    )
    # Widget state holds random widget ids: it is not saved (the notebooks are diffable).
    assert "widgets" not in notebook["metadata"], (
        "re-execute without saving widget state: jupyter nbconvert --to notebook --execute "
        "--inplace --ExecutePreprocessor.store_widget_state=False notebooks/*.ipynb"
    )


# ------------------------------------------------------------------------ the environment itself


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> float:
    """Run ``command``; fail the test with its output's tail if it fails. Returns seconds."""
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-6000:]
        pytest.fail(
            f"{' '.join(command)} failed ({result.returncode}) after {seconds:.0f} s:\n{output}"
        )
    return seconds


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.skipif(
    os.environ.get(RUN_ENV) == "0",
    reason=(
        f"{RUN_ENV}=0: not building the Binder environment from scratch (it compiles llama.cpp "
        "and downloads ~170 MB from PyPI, ~3.5 min on 2 cores). Run it with: "
        "python -m pytest tests/test_binder.py"
    ),
)
def test_binder_environment_runs_the_notebooks(tmp_path):
    version = _runtime_version()
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        base_python = sys.executable
    else:
        base_python = shutil.which(f"python{version}")
        if base_python is None:
            pytest.skip(
                f"binder/runtime.txt asks for Python {version}, which is not installed here"
            )

    # repo2docker copies the repository into the image and builds from its root
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=_NOT_COPIED)
    prefix = tmp_path / "env"
    env = scrubbed_environ(extra=_PYTHON_ENV)
    env.update(VIRTUAL_ENV=str(prefix), PATH=f"{prefix / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    python = str(prefix / "bin" / "python")
    times = {}

    # 1. the Python of runtime.txt with Jupyter's kernel (repo2docker's base environment)
    times["base environment"] = _run([base_python, "-m", "venv", str(prefix)], repo, env, 120)
    times["base environment"] += _run(
        [python, "-m", "pip", "install", "--quiet", "--upgrade", "pip", "ipykernel"], repo, env, 600
    )
    # 2. binder/requirements.txt, if any, from the repository's root
    requirements = repo / "binder" / "requirements.txt"
    if requirements.exists():
        times["requirements.txt"] = _run(
            [python, "-m", "pip", "install", "--no-cache-dir", "-r", str(requirements)],
            repo,
            env,
            1800,
        )
    # 3. binder/postBuild, from the repository's root
    post_build = repo / "binder" / "postBuild"
    if post_build.exists():
        times["postBuild"] = _run([str(post_build)], repo, env, 1800)

    # The notebooks, as in development: nbval compares every output with the saved one. The
    # kernel is this environment's Python, and the package is the installed one (no PYTHONPATH).
    tools = ["pytest", "pytest-timeout", "nbval"]
    times["test tools"] = _run([python, "-m", "pip", "install", "--quiet", *tools], repo, env, 600)
    times["notebooks"] = _run(
        [
            python,
            "-m",
            "pytest",
            "--nbval",
            "--nbval-current-env",
            "notebooks/",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        repo,
        env,
        900,
    )
    installed = subprocess.run(
        [python, "-c", "import copilot, llama_cpp; print(copilot.__file__, llama_cpp.__version__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(repo) in installed  # the editable install of the copy, not this checkout
    print("binder emulation:", ", ".join(f"{step} {s:.0f} s" for step, s in times.items()))

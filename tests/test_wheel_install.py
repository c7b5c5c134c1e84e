"""``pip install .`` (a wheel, not an editable install) runs hypergen's own defaults: the shipped
generator, zoo and descriptions travel as package data, found from the installed package.

The fresh virtual environment gets only the wheel (``--no-deps``); its dependencies (torch,
transformers, ...) are borrowed from the test's own environment through a ``.pth`` line, so the
test takes a minute, not a torch download. That environment's editable hypergen is not visible
(``.pth`` files of a borrowed folder are not run), and the command runs outside the source
tree, so only the wheel's own files can serve the defaults.
"""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd, cwd=None, timeout=900) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_a_wheel_in_a_fresh_venv_generates_an_adapter(tmp_path):
    wheels = tmp_path / "wheels"
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(wheels),
        str(ROOT),
    )
    wheel = next(wheels.glob("hypergen-*.whl"))
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    py = env / "bin" / "python"
    _run(str(py), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel))
    purelib = Path(
        _run(str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    )
    borrowed = [
        p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()
    ]
    (purelib / "borrowed-deps.pth").write_text("\n".join(dict.fromkeys(borrowed)) + "\n")
    where = _run(
        str(py),
        "-c",
        "import hypergen, expert_zoo; print(hypergen.__file__, expert_zoo.__file__)",
        cwd=tmp_path,
    )
    assert str(purelib) in where and str(ROOT) not in where, where  # the wheel's, not the tree's
    out = tmp_path / "adapter"
    printed = _run(
        str(env / "bin" / "hypergen"),
        "generate",
        "Decide whether a movie review is positive or negative",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert "nearest zoo experts:" in printed and "confidence: nearest" in printed

"""A plain install works: the wheel built from the checkout carries the schemas and the Flink settings,
and installed into a fresh venv outside the checkout it runs `freshrank generate` and `replay`.

The fresh venv gets freshrank from the wheel (`pip install --no-deps`); its dependencies come from
the test venv's site-packages, so the test needs no second download of Flink: through a .pth line for
the venv's own interpreter, and through PYTHONPATH for the Flink workers' embedded interpreter (which
does not read .pth files; in a real install the dependencies sit in the same site-packages). The
checkout's editable install is not active there (its import hook is a .pth file of the test venv,
which neither runs), and the commands run from a folder outside the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout_s: float = 300) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(the fresh venv's bin folder, the environment to run it with)."""
    root = tmp_path_factory.mktemp("plain-install")
    # From a copy of the sources: setuptools reuses a checkout's build/ folder, which could hold files
    # the current configuration no longer packages.
    source = root / "source"
    shutil.copytree(CHECKOUT, source, ignore=shutil.ignore_patterns(
        ".venv", ".cache", ".git", "build", "out", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(root / "dist")],
         cwd=root, env=dict(os.environ))
    (wheel,) = (root / "dist").glob("freshrank-*.whl")
    target = root / "venv"
    venv.create(target, with_pip=False)
    (target_site,) = (target / "lib").glob("python3*/site-packages")
    (target_site / "test-venv-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(target / "bin" / "python"), "install", "-q", "--no-deps",
          str(wheel)], cwd=root, env=dict(os.environ))
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    env["PYTHONPATH"] = os.pathsep.join(site.getsitepackages())
    env["FRESHRANK_CACHE_DIR"] = str(root / "cache")
    return target / "bin", env


@pytest.mark.flink
def test_the_wheel_carries_its_data_and_runs_outside_the_checkout(installed, tmp_path: Path) -> None:
    bin_dir, env = installed
    probe = _run([str(bin_dir / "python"), "-c", (
        "import json, job, udfs.schemas, job.paths;"
        "print(json.dumps([job.__file__, str(udfs.schemas.schema_files()), str(job.paths.flink_conf_dir()),"
        " udfs.schemas.raw_schema('Impression')['name'], len(udfs.schemas.previous_schemas('DeadLetter')),"
        " str(job.paths.cache_dir())]))")], cwd=tmp_path, env=env)
    module, schemas, conf, impression, previous, cache = json.loads(probe)
    venv_root = bin_dir.parent
    for path in (module, schemas, conf):
        assert Path(path).is_relative_to(venv_root), f"{path} is not the installed copy"
    assert impression == "Impression" and previous >= 1
    assert (Path(conf) / "config.yaml").is_file()
    assert cache == env["FRESHRANK_CACHE_DIR"]

    _run([str(bin_dir / "freshrank"), "generate", "--out", "events", "--impressions", "1500", "--users", "50",
          "--items", "40"], cwd=tmp_path, env=env)
    _run([str(bin_dir / "freshrank"), "replay", "--impressions", "events/impressions.jsonl",
          "--clicks", "events/clicks.jsonl", "--out", "run", "--window", "60"], cwd=tmp_path, env=env, timeout_s=600)
    impressions = {json.loads(line)["impression_id"] for line in (tmp_path / "events" / "impressions.jsonl").open()}
    examples = [json.loads(line) for part in (tmp_path / "run" / "examples").rglob("*") if part.is_file()
                for line in part.open() if line.strip()]
    assert {e["impression_id"] for e in examples} == impressions
    assert len(examples) == len(impressions)
    assert 0 < sum(e["label"] for e in examples) < len(examples)

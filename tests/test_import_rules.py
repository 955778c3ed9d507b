"""Who may import whom (docs/ARCHITECTURE.md), checked by import-linter's contracts in `.importlinter`:
generation.diffusion <- generation <- gallery <- ldmsite, no import cycle inside a package, and
imports inside functions count like any other."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(tree / ".importlinter"), "--no-cache"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=240)


def copy_of_the_code(destination: Path) -> Path:
    """The three packages' Python files and the contracts, without the model weights."""
    for package in ("generation", "gallery", "ldmsite"):
        shutil.copytree(ROOT / package, destination / package,
                        ignore=lambda folder, names: [n for n in names if not (n.endswith(".py") or
                                                                                (Path(folder) / n).is_dir())])
    shutil.copy(ROOT / ".importlinter", destination / ".importlinter")
    return destination


def test_the_code_keeps_every_import_rule():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_a_generation_module_importing_gallery_moderation_breaks_the_rules(tmp_path):
    tree = copy_of_the_code(tmp_path)
    queue = tree / "generation" / "queue.py"
    queue.write_text(queue.read_text() + "\n\ndef sneaky():\n    from gallery.moderation import suspend\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "generation.queue -> gallery.moderation" in result.stdout


def test_the_ml_core_importing_django_breaks_the_rules(tmp_path):
    tree = copy_of_the_code(tmp_path)
    engine = tree / "generation" / "diffusion" / "engine.py"
    engine.write_text("from django.conf import settings\n" + engine.read_text())
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "generation.diffusion.engine -> django" in result.stdout

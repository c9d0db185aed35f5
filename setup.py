"""Build hook (the rest of the configuration is in pyproject.toml): a wheel carries the sandbox's guest code.

`sandbox/` (the guest modules and image scripts) and `Dockerfile.sandbox` live at the top of the checkout,
where the image build reads them. A wheel gets a copy of both as `lllm/sandbox/image_source/`, with the same
names, so that an installed lllm finds the guest code (`LocalSandbox` installs `CALL_API` from it) and can
build the very same image (same content hash). Editable installs read the checkout and copy nothing.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def image_source_files() -> list[Path]:
    """Dockerfile.sandbox and every file under sandbox/, relative to the checkout."""
    found = [Path("Dockerfile.sandbox")]
    for path in sorted((HERE / "sandbox").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            found.append(path.relative_to(HERE))
    return found


class BuildPyWithImageSource(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "lllm" / "sandbox" / "image_source"
        for rel in image_source_files():
            self.mkpath(str((target / rel).parent))
            self.copy_file(str(HERE / rel), str(target / rel), preserve_mode=True)


setup(cmdclass={"build_py": BuildPyWithImageSource})

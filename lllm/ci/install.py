"""What a project needs installed, and the image its tests run in.

The seam between `lllm test` and the sandbox's package lanes: `project_requirements` reads what the project
asks for (`--requirements FILE`, else its `requirements*.txt`, else `[project] dependencies` of its
`pyproject.toml`); `prepare_image` turns that into an image. A given `--image` is used as it is. Otherwise the
requirements go to `lllm.sandbox.derived.derived_image` where this build of lllm has it (derived images with
packages fetched by the host); where it does not, the tests run in the sandbox image and the requirements it
does not satisfy are reported as setup problems (`check_script` finds them inside the sandbox).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lllm.errors import LLLMError, UsageError

MAX_REQUIREMENT_LINES = 500


@dataclass
class Requirement:
    line: str
    source: str
    """Where it came from: `requirements.txt:3`, `pyproject.toml`."""


@dataclass
class PreparedImage:
    image: str | None
    """None: the sandbox image (`lllm.sandbox.image.ensure_image()`)."""
    unchecked: list[Requirement] = field(default_factory=list)
    """Requirements nothing installed: to check inside the sandbox (`check_script`)."""
    problems: list[str] = field(default_factory=list)


def _requirement_file(path: Path, label: str) -> list[Requirement]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the requirements file {str(path)!r}: {exc}") from None
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            found.append(Requirement(line, f"{label}:{number}"))
    return found


def project_requirements(project: Path, requirements: str | Path | None = None) -> list[Requirement]:
    """The requirement lines of the project (see the module docstring), at most `MAX_REQUIREMENT_LINES`."""
    if requirements is not None:
        found = _requirement_file(Path(requirements), Path(requirements).name)
    else:
        found = []
        for path in sorted(project.glob("requirements*.txt")):
            if path.is_file() and not path.is_symlink():
                found += _requirement_file(path, path.name)
        if not found and (project / "pyproject.toml").is_file():
            import tomllib

            try:
                data = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UsageError(f"cannot read {str(project / 'pyproject.toml')!r}: {exc}") from None
            deps = data.get("project", {}).get("dependencies", []) if isinstance(data.get("project"), dict) else []
            found = [Requirement(str(dep), "pyproject.toml") for dep in deps if isinstance(dep, str)]
    if len(found) > MAX_REQUIREMENT_LINES:
        raise UsageError(f"{len(found)} requirement lines: more than {MAX_REQUIREMENT_LINES}; build an image with "
                         "them (`lllm sandbox build`) and give it with --image")
    return found


def _derived_image() -> Callable[..., str] | None:
    """`derived_image` of the sandbox room's package lanes, when this build has them."""
    try:
        module = importlib.import_module("lllm.sandbox.derived")
    except ImportError:
        return None
    found = getattr(module, "derived_image", None)
    return found if callable(found) else None


def prepare_image(requirements: list[Requirement], *, image: str | None,
                  log: Callable[[str], None] | None = None) -> PreparedImage:
    """The image to run the tests in, and what could not be installed (never raises for a requirement)."""
    if image is not None or not requirements:
        return PreparedImage(image)
    options = [r for r in requirements if r.line.startswith("-")]
    requirements = [r for r in requirements if not r.line.startswith("-")]
    problems = [f"requirement line {r.line!r} ({r.source}) is an option (-r, -e, --index-url, ...): not installed; "
                "name the packages themselves, or give --image with them installed" for r in options]
    if not requirements:
        return PreparedImage(None, problems=problems)
    build = _derived_image()
    if build is None:
        return PreparedImage(None, unchecked=list(requirements), problems=problems)
    lines = [r.line for r in requirements]
    try:
        return PreparedImage(build(lines, log=log), problems=problems)
    except LLLMError as exc:
        named = ", ".join(f"{r.line!r} ({r.source})" for r in requirements[:10])
        more = f" and {len(requirements) - 10} more" if len(requirements) > 10 else ""
        return PreparedImage(None, problems=[*problems, f"the requirements {named}{more} could not be installed: "
                                                         f"{exc}; the tests ran in the sandbox image without them"])


CHECK_SCRIPT = r"""
import json, sys
from importlib import metadata
try:
    from packaging.requirements import Requirement
except ImportError:
    Requirement = None
out = []
for line in json.loads(sys.stdin.read()):
    why = None
    if Requirement is None:
        why = "cannot be read here (no packaging module in the image)"
    else:
        try:
            req = Requirement(line)
        except Exception as exc:
            why = "not a valid requirement: %s" % exc
        else:
            if req.marker is not None and not req.marker.evaluate():
                continue
            try:
                have = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                why = "not installed in the image"
            else:
                if req.specifier and not req.specifier.contains(have, prereleases=True):
                    why = "the image has %s %s" % (req.name, have)
    if why:
        out.append([line, why])
print(json.dumps(out))
"""


def unsatisfied_problems(requirements: list[Requirement], answer: str) -> list[str]:
    """Setup problems from `CHECK_SCRIPT`'s answer (hostile text: parsed, validated, capped)."""
    try:
        rows = json.loads(answer.strip().splitlines()[-1]) if answer.strip() else None
    except ValueError:
        rows = None
    if not isinstance(rows, list):
        return ["the image's packages could not be checked against the requirements"]
    sources = {r.line: r.source for r in requirements}
    problems = []
    for row in rows[:MAX_REQUIREMENT_LINES]:
        if not (isinstance(row, list) and len(row) == 2 and row[0] in sources and isinstance(row[1], str)):
            continue
        problems.append(f"requirement {row[0]!r} ({sources[row[0]]}) cannot be installed: {row[1][:200]}; this "
                        "build of lllm has no package installation for `lllm test`, so the tests ran without it "
                        "(give --image with it installed)")
    return problems

"""Kernel start-up without the parts a sandbox never uses: `python3 -m lllm_kernel_boot -f CONNECTION_FILE ...`.

Used in place of `python3 -m ipykernel_launcher` (same arguments) by the container's supervisor and by
LocalSandbox. Starting an ipykernel imports some 950 modules, and two packages among them cost about a third of
that time (measured in the sandbox image with `python3 -X importtime`): debugpy, ipykernel's debugger (~180 ms
with the pkg_resources it pulls in), and jedi, IPython's completer (~110 ms). Nobody attaches a debugger to a
sandbox or asks it for completions. Both are hidden from the import system while the kernel initialises, which
ipykernel and IPython are written to handle (no debugger; plain completion), and can be imported again once it
has started, so code in the kernel may still `import jedi`.
"""

from __future__ import annotations

import sys

HIDDEN = ("debugpy", "jedi")


def main() -> None:
    if sys.path and sys.path[0] == "":
        del sys.path[0]  # as ipykernel_launcher does: not the working directory ahead of the standard library
    # None in sys.modules makes `import x` fail and `importlib.util.find_spec(x)` answer None: both ways
    # ipykernel and IPython (of any version) ask whether these are installed
    hidden = [name for name in HIDDEN if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        from ipykernel.kernelapp import IPKernelApp

        app = IPKernelApp.instance()
        app.initialize()
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    app.start()


if __name__ == "__main__":
    main()

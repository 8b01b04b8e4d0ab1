"""Byte code, kept on disk, of the modules Python imports from zip files on a sandbox host.

Installed in the sandbox host's image only (scripts/sandbox/build.sh), never by the roles. Every
Ansible task runs its module from a zip of ansible-core's module_utils (AnsiballZ), and Python
compiles a module imported from a zip from its source every time: about 90 ms of a task's
270 ms of CPU on the host, measured, over the thousands of tasks a CI run drives. Here the
code compiled from a source is kept, keyed by the module's path inside its zip and the
source's digest, so the next task loads it; what a task runs is the same code either way.
"""

import hashlib
import marshal
import os
import types
import zipimport

CACHE = "/var/cache/switchyard-zipimport"
_compile_source = zipimport._compile_source


def _compile_once(pathname: str, source: bytes) -> types.CodeType:
    # pathname is the zip's path, which AnsiballZ makes anew for each task, then the module's.
    inside = pathname.rpartition(".zip" + os.sep)[2]
    path = os.path.join(CACHE, hashlib.sha256(inside.encode() + b"\0" + source).hexdigest())
    try:
        with open(path, "rb") as cached:
            return marshal.load(cached)
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code = _compile_source(pathname, source)
    try:
        os.makedirs(CACHE, mode=0o700, exist_ok=True)
        partial = f"{path}.{os.getpid()}"
        with open(partial, "wb") as out:
            marshal.dump(code, out)
        os.replace(partial, path)
    except OSError:
        pass  # another account's Python: it compiles, as without the cache
    return code


zipimport._compile_source = _compile_once

"""The API key file: one key per line, with what is known of the key after it.

    sk-...                                         a key; metrics and the log call it key-<n>
    sk-... name=batch max_in_flight=4 priority=10  named, at most 4 requests in flight, and
                                                   vLLM's scheduling priority for its requests

Blank lines and lines starting with # are skipped; <n> counts the keys from 1. A key holds no
space (roles/gateway checks the same rule before writing the file), so the fields after it
cannot be mistaken for a part of it. The file is readable by root and the service's user only:
names and limits live beside the keys, never on a command line or in the environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_INTEGER = re.compile(r"^-?[0-9]{1,9}$")
FIELDS = ("name", "max_in_flight", "priority")
# Keys with a max_in_flight, at most (each takes a column of limits.py's shared table).
LIMITED_KEYS_MAX = 1024


class KeyFileError(ValueError):
    """A line of the key file is malformed: the message names the line, never the key."""


@dataclass(frozen=True)
class ApiKey:
    secret: str = field(repr=False)
    name: str
    # Requests of this key the gateway forwards at once, all workers together; 0: no limit.
    max_in_flight: int = 0
    # vLLM's `priority` for this key's requests (lower is served first); None: not set.
    priority: int | None = None
    # The key's column in limits.py's table of requests in flight, when it has a limit.
    slot: int = -1


def parse_key_line(line: str, number: int, position: int) -> ApiKey:
    """Key number `position` (from 1), on line `number` of the file."""
    secret, *pairs = line.split()
    given: dict[str, str] = {}
    for place, pair in enumerate(pairs, start=2):
        name, sep, value = pair.partition("=")
        if not sep or name not in FIELDS or name in given:
            # Not quoted: a key with a space in it would be in the log.
            raise KeyFileError(
                f"line {number}: word {place} is not one of {', '.join(f + '=' for f in FIELDS)} "
                "(each once, after the key)"
            )
        given[name] = value
    name = given.get("name", f"key-{position}")
    if not _NAME.match(name):
        raise KeyFileError(f"line {number}: name={name!r}: letters, digits, '.', '_' or '-', up to 64")
    for number_field in ("max_in_flight", "priority"):
        if number_field in given and not _INTEGER.match(given[number_field]):
            raise KeyFileError(f"line {number}: {number_field}={given[number_field]!r} is not a whole number")
    max_in_flight = int(given.get("max_in_flight", "0"))
    if max_in_flight < 0:
        raise KeyFileError(f"line {number}: max_in_flight={max_in_flight}: 0 (no limit) or more")
    priority = int(given["priority"]) if "priority" in given else None
    return ApiKey(secret, name, max_in_flight, priority)


def read_key_file(path: Path) -> tuple[ApiKey, ...]:
    """The keys of the file, in its order; raises OSError, KeyFileError (a line or a name twice)."""
    keys: list[ApiKey] = []
    limited = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            key = parse_key_line(line, number, len(keys) + 1)
            if key.max_in_flight:
                key, limited = replace(key, slot=limited), limited + 1
            keys.append(key)
    if limited > LIMITED_KEYS_MAX:
        raise KeyFileError(f"{limited} keys have a max_in_flight: {LIMITED_KEYS_MAX} at most")
    names = [key.name for key in keys]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise KeyFileError(f"the name {', '.join(twice)} is given to more than one key: give each key its own")
    return tuple(keys)

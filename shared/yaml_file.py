"""Reading a configuration file written in YAML, with errors that say where and never what was written there.

The tenants file may hold a secret written inline by mistake, so an error about it names the
file, the line and the column and what is wrong, but repeats nothing of the file: not
PyYAML's snippet of the line, not a quoted scalar, tag, anchor or alias from its problem
text, and no value a tag could not convert (``!!int s3cr3t``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from shared.config_errors import ConfigError

# A quoted run in PyYAML's problem text: a character (kept, e.g. '\t'), a token kind such as '<scalar>'
# (kept), or anything else written in the file (dropped).
_QUOTED = re.compile(r"""\s*(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
_SAFE_QUOTED = re.compile(r"""^\s*(['"])(?:\\?.|\\x[0-9a-f]{2}|\\u[0-9a-f]{4}|<[a-z ]+>)\1$""")


class YamlDocument:
    """A parsed file and its node tree, which knows the line of every key."""

    def __init__(self, path: Path, data: Any, root: Node | None) -> None:
        self.path = path
        self.data = data
        self._root = root

    def position(self, loc: Sequence[str | int]) -> str | None:
        """``line L, column C`` of the deepest node along ``loc`` that the file has (None: an empty file)."""
        node, mark = self._root, None
        for part in loc:
            if node is None:
                break
            mark = node.start_mark
            node = _child(node, part)
        if node is not None:
            mark = node.start_mark
        return _line(mark)


def read_yaml(path: Path, what: str) -> YamlDocument:
    """Parse ``path``, or raise :class:`ConfigError` naming it, the line and the column (``what``: "the tenants
    file")."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position(raw, exc.start)
        raise ConfigError(f"{path}, line {line}, column {column}: {what} is not UTF-8") from None
    try:
        root, data = _parse(text)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(
            f"{_at(path, exc.problem_mark or exc.context_mark)}: not valid YAML: {_problem(exc)}"
        ) from None
    except yaml.reader.ReaderError as exc:  # a control character, a lone surrogate: said by its code point
        line, column = _position(text, exc.position)
        raise ConfigError(f"{path}, line {line}, column {column}: not valid YAML: {exc.reason}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    return YamlDocument(path, data, root)


def _parse(text: str) -> tuple[Node | None, Any]:
    loader = _Loader(text)  # checks every character at once: may raise ReaderError
    try:
        root = loader.get_single_node()
        return root, loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, but a scalar a tag cannot convert is a marked error, not a bare ValueError that
    repeats it."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception:  # ValueError, KeyError (!!bool), AttributeError (!!timestamp)...: each repeats the value
            kind = str(node.tag).rsplit(":", 1)[-1]
            raise ConstructorError(None, None, f"the value cannot be read as {kind}", node.start_mark) from None


def _problem(exc: yaml.MarkedYAMLError) -> str:
    context = _scrub(exc.context or "")
    started = _line(exc.context_mark)
    if context and started and exc.problem_mark is not None and _line(exc.problem_mark) != started:
        context = f"{context} started at {started}"
    problem = _scrub(exc.problem or "")
    return ": ".join(p for p in (context, problem) if p) or "syntax error"


def _scrub(text: str) -> str:
    scrubbed = re.sub(r"\s+", " ", _QUOTED.sub(_keep_safe, text)).strip()
    # A quote left over (one the pattern could not pair) may open something from the file: say nothing of it.
    leftover = _QUOTED.sub("", scrubbed)
    return "syntax error" if "'" in leftover or '"' in leftover else scrubbed


def _keep_safe(match: re.Match[str]) -> str:
    return match.group(0) if _SAFE_QUOTED.match(match.group(0)) else ""


def _at(path: Path, mark: yaml.Mark | None) -> str:
    line = _line(mark)
    return f"{path}, {line}" if line else str(path)


def _line(mark: yaml.Mark | None) -> str | None:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else None


def _position(text: str | bytes, offset: int) -> tuple[int, int]:
    before = text[:offset]
    newline = "\n" if isinstance(text, str) else b"\n"
    return before.count(newline) + 1, offset - (before.rfind(newline) + 1) + 1  # type: ignore[arg-type]


def _child(node: Node, part: str | int) -> Node | None:
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if isinstance(key, ScalarNode) and key.value == str(part):
                return value  # type: ignore[no-any-return]
    if isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return node.value[part]  # type: ignore[no-any-return]
    return None

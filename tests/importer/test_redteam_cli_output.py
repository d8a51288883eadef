"""`conduit imports show` prints what a third party wrote (a rejected row, PostgreSQL's message quoting its value)
to an operator's terminal: a control character from the export must reach it as text, never as a command.

An escape sequence can clear the screen, rewrite the lines above (a row that looks imported), set the
window title or the clipboard (OSC 52); a line break or carriage return can forge a row of the table; a
right-to-left override turns what follows around.
"""

from __future__ import annotations

from tests.importer.conftest import Importer
from tests.importer.support import Exports, export_body
from tests.importer.test_cli import cli

GOOD = "".join(f"{i},u{i}\n" for i in range(100, 1000))  # rejects stay under the module's 1%
HOSTILE = {
    "\x1b[2J\x1b[H": "\\x1b[2J\\x1b[H",  # clear the screen, cursor home
    "\x1b]52;c;cm0gLXJmIH4=\x07": "\\x1b]52;c;cm0gLXJmIH4=\\x07",  # write the clipboard
    "\x9b31m": "\\x9b31m",  # the one-byte CSI
    "ok\rforged": "ok\\rforged",
    "\u202eevil": "\\u202eevil",
}


async def test_show_prints_an_exports_control_characters_as_text(importer: Importer, exports: Exports) -> None:
    rows = "".join(f'"{value}",u{i}\n' for i, value in enumerate(HOSTILE))
    exports.set("users", export_body("users", "user_id,login\n" + GOOD + rows + '"two\nlines",u9\n'))
    await importer.run("acme", "users", "2024-05-01")
    run_id = (await importer.last_run())["id"]

    code, text, err = await cli(importer, "show", str(run_id))

    assert code == 0, err
    assert "first rejected rows" in text
    printed = set(text) - {"\n"}
    assert all(ch.isprintable() for ch in printed), sorted(ch for ch in printed if not ch.isprintable())
    for shown in HOSTILE.values():
        assert shown in text
    assert "two\\nlines" in text

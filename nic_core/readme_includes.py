"""The generated blocks of README.md and docs/*.md: each ``<!-- include: FILE -->`` ...
``<!-- end -->`` block holds FILE's text, so a results table on a page is the committed table
file (``make figures`` refreshes them; ``tests/test_readme.py`` fails when a block and its file
differ)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List

# a block may be empty; its text never spans another block's start
INCLUDE = re.compile(r"(<!-- include: (\S+) -->\n)((?:(?!<!-- include:).)*?)\n?(<!-- end -->)",
                     re.S)


def refresh_includes(readme) -> List[str]:
    """Replace each ``<!-- include: FILE -->`` ... ``<!-- end -->`` block of ``readme`` with
    FILE's current text (paths relative to the README's folder); returns the files whose block
    changed. ``make figures`` runs it, so the README's tables are the results' tables."""
    readme = Path(readme)
    text, changed = readme.read_text(), []

    def fill(m):
        new = (readme.parent / m.group(2)).read_text().strip()
        if new != m.group(3).strip():
            changed.append(m.group(2))
        return m.group(1) + new + "\n" + m.group(4)

    out = INCLUDE.sub(fill, text)
    if out != text:
        readme.write_text(out)
    return changed

"""The README's "Use" section runs as written: every ```python block of it, each on its own.

Blocks are found anew on every run, so a block added to the section is tested with no change
here.  A block that needs what a test machine lacks (a GPU, several processes, a download) opts
out with a line ``# readme-test: skip <why>`` inside it; the reason is required and shown as the
skip reason.  Tracebacks point at README.md's own line numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Use"
SKIP = re.compile(r"^\s*#\s*readme-test:\s*skip\b\s*(.*)$", re.MULTILINE)


@dataclass
class Block:
    line: int  # README line of the block's first code line (1-based)
    code: str

    @property
    def skip_reason(self) -> str | None:
        m = SKIP.search(self.code)
        return None if m is None else m.group(1).strip(" -—:")


def python_blocks(text: str, section: str = SECTION) -> list[Block]:
    """The ```python blocks between the heading ``section`` and the next heading of its level."""
    lines = text.splitlines()
    try:
        start = lines.index(section)
    except ValueError:
        raise AssertionError(f"README has no {section!r} heading") from None
    level = section.split(" ", 1)[0] + " "
    blocks, code, first, fence = [], [], 0, None
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if fence is None:
            if line.startswith(level):
                break
            m = re.match(r"^(`{3,})\s*(\S*)", line)
            if m:
                fence, lang = m.group(1), m.group(2)
                code, first = ([] if lang == "python" else None), i + 2
        elif line.strip() == fence:
            if code is not None:
                blocks.append(Block(first, "\n".join(code) + "\n"))
            fence = None
        elif code is not None:
            code.append(line)
    assert fence is None, f"README: the code block opened above line {first} is never closed"
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_use_section_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_readme_block_runs(block: Block, monkeypatch):
    reason = block.skip_reason
    if reason is not None:
        assert reason, f"README.md:{block.line}: '# readme-test: skip' needs a reason after it"
        pytest.skip(reason)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing in a Use block may reach the network
    code = compile("\n" * (block.line - 1) + block.code, str(README), "exec")
    exec(code, {"__name__": "__readme__"})


SAMPLE = """# t
## Use
text
```python
a = 1
```
```bash
not python
```
````python
# readme-test: skip needs a GPU
b = 2
````
## Next
```python
c = 3
```
"""


def test_extractor_takes_only_the_sections_python_blocks():
    blocks = python_blocks(SAMPLE)
    assert [b.code for b in blocks] == ["a = 1\n", "# readme-test: skip needs a GPU\nb = 2\n"]
    assert [b.line for b in blocks] == [5, 11]
    assert [b.skip_reason for b in blocks] == [None, "needs a GPU"]


def test_extractor_rejects_an_unclosed_block():
    with pytest.raises(AssertionError, match="never closed"):
        python_blocks("## Use\n```python\nx = 1\n")

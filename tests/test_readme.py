"""The README's package example must run and print what it claims."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "README.md has no python example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    exact, estimate, stderr = map(float, re.findall(r"-?\d+\.\d+", out))
    # Fixed seed; the estimate is within 4 standard errors of the exact evidence.
    assert abs(estimate - exact) < 4 * stderr

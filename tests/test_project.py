"""The project's promises about itself: the README's commands and CI agree."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_has_exactly_two_quick_start_commands():
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    assert commands[0] == "pip install . && fastrec demo"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert quick_start_commands()[1] in ci


def test_public_api_is_importable_and_listed():
    import fastrec
    for name in fastrec.__all__:
        assert hasattr(fastrec, name), name


def test_readme_api_tour_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## API tour\n\n```python\n(.+?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["top"].shape == (3, 10)
    assert (tmp_path / "model.npz").exists()

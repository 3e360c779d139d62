"""Each console script of pyproject.toml also runs as ``python -m kdseg.cli.<name>``.

Without ``if __name__ == "__main__": main()`` the module is imported and the command exits 0
having done nothing: a run script written that way (e.g. to run a working tree's code with
another environment's Python) silently trains, evaluates or exports nothing.
"""

from __future__ import annotations

import ast
import importlib
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _scripts() -> dict[str, str]:
    """``kdseg-<name>`` -> its module, from pyproject.toml's ``[project.scripts]``
    (``kdseg.entry:<module>`` runs ``kdseg.cli.<module>``'s ``main``)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    found = re.findall(r'^(kdseg-[\w-]+)\s*=\s*"kdseg\.entry:(\w+)"', section, re.M)
    return {script: f"kdseg.cli.{name}" for script, name in found}


def _runs_main_as_a_script(module: str) -> bool:
    tree = ast.parse((ROOT / Path(*module.split("."))).with_suffix(".py").read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.If)
            and ast.unparse(node.test).replace("'", '"') == '__name__ == "__main__"'
            and any(ast.unparse(s) == "main()" for s in node.body)
        ):
            return True
    return False


@pytest.mark.parametrize(("script", "module"), sorted(_scripts().items()))
def test_every_command_runs_with_python_m(script: str, module: str) -> None:
    assert _runs_main_as_a_script(module), f"python -m {module} would not run {script}"


def test_python_m_does_the_work(tmp_path: Path) -> None:
    """One command run for real: its output is written, as the console script writes it."""
    assert len(_scripts()) >= 12
    root = tmp_path / "lits"
    params = "params={size_range: [32, 32], slices_range: [8, 8], max_tumors: 1}"
    result = subprocess.run(
        [sys.executable, "-m", "kdseg.cli.phantom", "dataset=lits", f"root={root}",
         "n_cases=1", "seed=1", params],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 lits phantom case(s)" in result.stdout
    assert sorted(p.name for p in root.glob("*.nii.gz")) == [
        "segmentation-0.nii.gz",
        "volume-0.nii.gz",
    ]


# -- --help: the choices of each config group ----------------------------------------------

CONF = ROOT / "conf"


def _hydra_commands() -> dict[str, str]:
    """``kdseg-<name>`` -> its config name, for the commands made by ``@command``."""
    found = {}
    for script, module in _scripts().items():
        source = (ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
        match = re.search(r'@command\(\s*"' + re.escape(script) + r'",\s*"(\w+)"', source)
        if match:
            found[script] = match.group(1)
    return found


def _expected_groups(conf: Path, config: str) -> dict[str, tuple[list[str], str | None, set]]:
    """group -> (its choices as the folder holds them, the default, the choices whose header
    comment says BEYOND THE PAPER), from ``conf/<config>.yaml``'s defaults list."""
    import yaml

    defaults = yaml.safe_load((conf / f"{config}.yaml").read_text()).get("defaults") or []
    groups = {}
    for entry in defaults:
        if not isinstance(entry, dict):
            continue
        ((group, default),) = entry.items()
        if group.startswith(("override", "hydra")):
            continue
        files = sorted((conf / group).glob("*.yaml"))
        assert files, f"conf/{group}/ is empty"
        beyond = set()
        for path in files:
            lines = path.read_text().splitlines()
            header = " ".join(itertools.takewhile(lambda line: line.startswith("#"), lines))
            if "BEYOND THE PAPER" in header:
                beyond.add(path.stem)
        groups[group] = ([p.stem for p in files], default, beyond)
    return groups


def _listed_groups(text: str) -> dict[str, list[str]]:
    """group -> its items as the help's ``config groups`` section lists them (lines joined)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("config groups"))
    groups: dict[str, list[str]] = {}
    last = ""
    for line in itertools.takewhile(bool, lines[start + 1 :]):
        match = re.match(r"^  (\w+):\s+(.*)$", line)
        if match:
            last = match.group(1)
            groups[last] = [match.group(2)]
        else:
            assert line.startswith("    ") and last, line
            groups[last].append(line.strip())
    return {group: " ".join(parts).split(", ") for group, parts in groups.items()}


def _check_help(text: str, conf: Path, config: str) -> None:
    expected = _expected_groups(conf, config)
    if not expected:
        assert "config groups" not in text
        return
    listed = _listed_groups(text)
    assert list(listed) == list(expected)
    for group, (choices, default, beyond) in expected.items():
        items = listed[group]
        if default is None:  # `experiment: null`: none chosen, listed first
            assert items[0] == "null (default)", (group, items)
            items = items[1:]
        defaults = [item for item in items if item.endswith(" (default)")]
        marked = default is not None and default != "default"  # `default` says it itself
        assert defaults == ([f"{default}{'*' * (default in beyond)} (default)"] if marked else [])
        names = [item.removesuffix(" (default)") for item in items]
        assert [name.rstrip("*") for name in names] == choices, f"{group}: not conf/{group}/"
        assert {name[:-1] for name in names if name.endswith("*")} == beyond, group


@pytest.mark.parametrize(("script", "config"), sorted(_hydra_commands().items()))
def test_help_lists_the_choices_of_each_config_group(script, config, monkeypatch, capsys) -> None:
    """``kdseg-<x> --help`` lists each config group of its defaults list with the files of
    ``conf/<group>/`` now (a new YAML shows without a code change), the default marked."""
    from kdseg.cli import fast_help

    monkeypatch.setattr(sys, "argv", [script, "--help"])
    monkeypatch.setenv("COLUMNS", "80")
    assert fast_help(config)(lambda: pytest.fail("--help ran the task"))() is None
    text = capsys.readouterr().out
    assert text.startswith(f"usage: {script} key=value")
    _check_help(text, CONF, config)
    section = text.split("\n\n")[1]
    if "config groups" in section:
        assert max(len(line) for line in section.splitlines()) <= 80


def test_help_has_the_distill_methods_and_marks_what_goes_beyond_the_paper() -> None:
    from kdseg.cli.options import groups_help

    listed = _listed_groups(groups_help("distill"))
    assert "emkd (default)" in listed["distill"]
    assert {"kd", "at", "emkd_imd"} <= set(listed["distill"])
    assert {"emkd_balanced*", "kd_region*"} <= set(listed["distill"])
    assert (
        "enet (default)" in listed["student"]
        and "unetpp (default)" in _listed_groups(groups_help("train"))["model"]
    )
    # a default named "default" is not marked twice ("paths: default (default)" read oddly)
    assert listed["paths"] == ["default"]
    assert listed["trainer"] == ["ddp", "ddp_fork", "default", "gpu"]
    assert "default" in listed["logger"] and "csv" in listed["logger"]
    assert "(default) (default)" not in groups_help("train")


def test_help_lists_a_new_config_file(tmp_path: Path) -> None:
    """A YAML added to a group is listed (and starred) without any code change."""
    import shutil

    from kdseg.cli.options import groups_help

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf, symlinks=True)
    (conf / "distill" / "zz_new.yaml").write_text(
        "# @package distill\n# BEYOND THE PAPER: a test's method\nname: zz_new\n"
    )
    (conf / "data" / "aa_new.yaml").write_text("# @package data\nname: aa_new\n")
    text = groups_help("distill", root=conf)
    _check_help(text, conf, "distill")
    listed = _listed_groups(text)
    assert listed["distill"][-1] == "zz_new*" and listed["data"][0] == "aa_new"


def test_help_is_fast_and_quiet() -> None:
    """The real entry point: the section is there, nothing on stderr, torch not imported."""
    code = (
        "import sys; sys.argv = ['kdseg-distill', '--help']\n"
        "from kdseg.cli.distill import main\n"
        "main(); print('torch imported:', 'torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"},
    )  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stderr
    _check_help(result.stdout, CONF, "distill")
    assert result.stdout.rstrip().endswith("torch imported: False")


def test_every_console_script_runs_its_command_module() -> None:
    """``kdseg.entry:<module>`` imports ``kdseg.cli.<module>`` and calls its ``main``, under
    the command's own name (``kdseg-eval`` runs :mod:`kdseg.cli.evaluate`)."""
    import inspect

    import kdseg.entry

    assert len(_scripts()) >= 12
    for script, module in _scripts().items():
        name = module.rsplit(".", 1)[1]
        source = inspect.getsource(getattr(kdseg.entry, name))
        assert f'return _run("{name}", "{script}")' in source, script
        assert callable(importlib.import_module(module).main), module


def test_the_entry_module_imports_nothing_a_command_would_not() -> None:
    """The console script's own import is the standard library alone: the command's imports
    (Hydra, OmegaConf, numpy ...) happen inside :func:`kdseg.entry._run`'s ``try``."""
    code = (
        "import sys; before = set(sys.modules); import kdseg.entry\n"
        "print(sorted(m.split('.')[0] for m in set(sys.modules) - before))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert set(ast.literal_eval(result.stdout)) <= {"kdseg", "importlib"}, result.stdout


#: a stand-in for the console script pip writes (its last two lines), with SIGINT sent while
#: the command imports: as Hydra is being imported (by the ``@command`` decorator, after
#: OmegaConf, nibabel and kdseg.cli), or from a timer 1 ms after the entry module's import.
#: SIGINT as a shell starts a command: a child inherits an ignored or blocked SIGINT from the
#: test process (Python keeps an inherited SIG_IGN: the command never sees the signal and runs
#: on to "input not found", as a clean-clone run of the whole suite once showed)
_EARLY_CTRL_C = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as a shell starts a command
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
sys.argv = ["kdseg-predict", "input=in.nii.gz", "output=out.nii.gz"]
class Stop:
    def find_spec(self, name, path=None, target=None):
        if name == "hydra":
            signal.raise_signal(signal.SIGINT)
if "{how}" == "hydra":
    sys.meta_path.insert(0, Stop())
from kdseg.entry import predict
if "{how}" == "timer":
    signal.signal(signal.SIGALRM, lambda *_: signal.raise_signal(signal.SIGINT))
    signal.setitimer(signal.ITIMER_REAL, 0.001)
sys.exit(predict())
"""


@pytest.mark.parametrize("how", ["timer", "hydra"])
def test_ctrl_c_while_a_command_starts_is_its_one_line(how: str) -> None:
    """Ctrl-C before the command's signal handlers were installed (its first 0.3 to 0.5 s of
    imports) printed a 30-line ``KeyboardInterrupt`` traceback and died of SIGINT; now it is the
    line and exit code of Ctrl-C later in the run."""
    result = subprocess.run(
        [sys.executable, "-c", _EARLY_CTRL_C.replace("{how}", how)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr == "kdseg-predict: error: interrupted; unfinished outputs removed\n"
    assert result.returncode == 130

"""The command lines README.md, docs/*.md and the headers of conf/ (each command's ``--help``)
show still run against today's code and configs.

Users copy them, so each is checked as its command would check it before doing any work: a
Hydra command (``kdseg-train``, ``kdseg-eval`` ...) is composed from ``conf/`` with its
overrides through Hydra's compose API and passed through kdseg's own option checks (unknown
``+key=``, option types and ranges: :mod:`kdseg.cli.options`), a Hydra refusal told as the
command tells it (unknown option, unknown config choice); ``kdseg-models`` and the Python
scripts must have the options named; a ``make`` target must be in the Makefile; a script path
must exist. Nothing runs, and the paths named (checkpoints, data) need not exist.

Placeholders are part of the design, not skipped by markers: ``<a run>`` and ``...`` stand for
any value (a config group given one is left at its default), ``$VAR`` for a shell variable
(the whole value: null; inside a value: a word), a ``-m`` sweep is checked value by value.
The study record folders (``docs/study_v*/`` ...) are not read; the commands of their
protocols in docs/*.md are checked as the other commands are.
"""

from __future__ import annotations

import ast
import functools
import itertools
import re
import shlex
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import kdseg.config  # noqa: F401  (the resolvers the configs use)
from kdseg.cli.options import CONFIG_PATH, check_overrides

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
#: the config files: their header comments are the commands' ``--help`` (kdseg.cli.fast_help)
CONFIGS = tuple(sorted((ROOT / "conf").rglob("*.yaml")))

#: what a documented value may be when it stands for any value
PLACEHOLDER = "PLACEHOLDER"
#: the refusals the docs show on purpose (docs/reliability.md), with the word of the refusal
REFUSED = {"kdseg-predict +thresold=0.5": "has no option 'thresold'"}


@functools.cache
def entry_points() -> dict[str, str | None]:
    """``kdseg-<name>`` -> its config name (``conf/<name>.yaml``; None: not a Hydra app), as
    pyproject.toml and each command's ``@command("kdseg-x", "<config>")`` say."""
    text = (ROOT / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    found: dict[str, str | None] = {}
    for name, module in re.findall(r'^(kdseg-[\w-]+)\s*=\s*"kdseg\.entry:(\w+)"', scripts, re.M):
        source = (ROOT / "kdseg" / "cli" / f"{module}.py").read_text()
        config = re.search(r'@command\(\s*"' + re.escape(name) + r'",\s*"(\w+)"', source)
        found[name] = config.group(1) if config else None
    return found


# -- extraction ---------------------------------------------------------------------------


def snippets(path: Path) -> list[tuple[int, str]]:
    """(line number, text): each line of a fenced block (``\\`` continuations joined) and each
    inline code span; in a config file, each comment line that starts with a command."""
    found: list[tuple[int, str]] = []
    fenced, pending, start = False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if path.suffix == ".yaml":  # `#   kdseg-train model=...`, and its `\\` continuations
            comment = line.strip().removeprefix("#").strip() if line.startswith("#") else ""
            fenced = bool(pending) or comment.startswith("kdseg-")
        elif line.strip().startswith("```"):
            fenced, pending = not fenced, ""
            continue
        if fenced:
            text = comment if path.suffix == ".yaml" else line.strip()
            start = start if pending else number
            pending = f"{pending} {text}" if pending else text
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip()
                continue
            found.append((start, pending))
            pending = ""
        elif path.suffix == ".md":
            found += [(number, span) for span in re.findall(r"`([^`\n]+)`", line)]
    return found


def shell_commands(text: str) -> list[list[str]]:
    """The simple commands of a shell line (split at ``;``, ``&&``, ``&``, ``|``, comments
    dropped), each without leading ``VAR=value`` assignments and ``do`` / ``then``."""
    text = re.sub(r"<[^<>`]*>", PLACEHOLDER, text)  # <a run folder>
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        words = list(lexer)
    except ValueError:  # an unclosed quote: prose, not a command
        return []
    commands = [
        list(group)
        for separator, group in itertools.groupby(words, lambda w: set(w) <= set(";&|"))
        if not separator
    ]
    for command in commands:
        while command and (
            command[0] in ("do", "then", "time") or re.match(r"^[A-Za-z_]\w*=", command[0])
        ):
            command.pop(0)
    return [c for c in commands if c]


def doc_commands(
    paths: tuple[Path, ...] = (*DOCS, *CONFIGS), root: Path = ROOT
) -> list[tuple[str, list[str]]]:
    """(``file:line``, words) of every command the docs show that this test knows how to
    check: kdseg's entry points, ``python <script>``, ``make``, a shell script of the repo."""
    found = []
    for path in paths:
        for number, text in snippets(path):
            for words in shell_commands(text):
                program = words[0]
                known = (
                    Path(program).name in entry_points()
                    or (Path(program).name.startswith("python") and len(words) > 1)
                    or program == "make"
                    or (program == "bash" and len(words) > 1)
                    or ("/" in program and program.endswith(".sh"))  # not a name in prose
                )
                if known:
                    found.append((f"{path.relative_to(root)}:{number}", words))
    return found


# -- Hydra commands -----------------------------------------------------------------------


def _placeholder(value: str) -> bool:
    return value in ("...", PLACEHOLDER)


def hydra_overrides(words: list[str]) -> list[list[str]]:
    """The override lists to compose for a documented command line: flags dropped (``-m``,
    ``--cfg job``), placeholders and shell variables given values, a sweep (``a,b,c``) one
    list per value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides, sweeps = [], []
    args = iter(words)
    for arg in args:
        if arg in ("--cfg", "-c", "--package", "-p", "--info", "-i"):
            next(args, None)
            continue
        if arg.startswith("-") or _placeholder(arg):
            continue
        key, equals, value = arg.partition("=")
        if not equals:
            raise AssertionError(f"{arg!r}: not key=value")
        if re.fullmatch(r"\$\{?\w+\}?", value) or _placeholder(value):
            if (Path(CONFIG_PATH) / key.lstrip("+~")).is_dir():
                continue  # model=...: any choice; left at the default
            # any value: null where the option takes one (hydra's own options do not)
            value = PLACEHOLDER if key.lstrip("+").startswith("hydra.") else "null"
        value = re.sub(r"\$\{?(\w+)\}?", PLACEHOLDER, value)
        override = f"{key}={value}"
        parsed = OverridesParser.create().parse_override(override)
        if parsed.is_sweep_override():
            values = [v for v in parsed.sweep_string_iterator() if not _placeholder(v)]
            sweeps.append([f"{key}={v}" for v in values])
        else:
            overrides.append(override)
    if not sweeps:
        return [overrides]
    # every value of each sweep once, the other sweeps at their first value
    first = [sweep[0] for sweep in sweeps]
    lists = [overrides + first]
    for i, sweep in enumerate(sweeps):
        lists += [overrides + first[:i] + [value] + first[i + 1 :] for value in sweep[1:]]
    return lists


@functools.cache  # many lines of the docs compose the same config
def check_hydra(config_name: str, overrides: tuple[str, ...]) -> None:
    """What the command checks before its task (:func:`check_overrides`: also what ``--cfg
    job`` runs), and that every value resolves (an interpolation into a key that moved)."""
    cfg = check_overrides(config_name, list(overrides))
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


# -- other programs -----------------------------------------------------------------------


def _local_imports(path: Path) -> list[Path]:
    """The modules of scripts/ and of the script's own folder that ``path`` imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    folders = (path.parent, ROOT / "scripts")
    return [f / f"{n}.py" for n in sorted(names) for f in folders if (f / f"{n}.py").is_file()]


@functools.cache
def script_options(path: Path) -> frozenset[str]:
    """The ``--options`` of a script's argparse parsers: its own and those of the modules of
    scripts/ it imports (a study script of docs/ runs phantom_study's parser)."""
    options: set[str] = set(re.findall(r"""add_argument\(\s*["'](--[\w-]+)""", path.read_text()))
    for module in _local_imports(path):
        if module != path:
            options |= script_options(module)
    return frozenset(options)


def check_options(path: Path, args: list[str]) -> None:
    known = script_options(path)
    for arg in args:
        option = arg.partition("=")[0]
        if option.startswith("--") and option not in known:
            raise AssertionError(f"{option}: not an option of {path.relative_to(ROOT)}")


def check_python(words: list[str]) -> None:
    args = words[1:]
    if not args or args[0] in ("-m", "-c") or args[0].startswith("-"):
        return  # python -m venv ..., python -c "..."
    script = ROOT / args[0]
    assert script.is_file(), f"{args[0]}: no such script"
    check_options(script, args[1:])
    for i, arg in enumerate(args):  # --stages: names the script knows
        if arg == "--stages" and i + 1 < len(args):
            known = script_stages(script)
            unknown = [s for s in args[i + 1].split(",") if s and known and s not in known]
            assert not unknown, f"--stages {unknown}: not a stage of {args[0]} ({known})"


@functools.cache
def script_stages(path: Path) -> tuple[str, ...]:
    """``STAGES``: a tuple of names in the script or a module of scripts/ it imports."""
    for module in (path, *_local_imports(path)):
        for node in ast.parse(module.read_text()).body:
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "STAGES" for t in node.targets)
                and isinstance(node.value, ast.Tuple)
            ):
                return tuple(ast.literal_eval(node.value))
    return ()


def check_models(words: list[str]) -> None:
    """``kdseg-models``: argparse options of kdseg/cli/models.py, networks of conf/model/."""
    check_options(ROOT / "kdseg" / "cli" / "models.py", words[1:])
    networks = {OmegaConf.load(p).name for p in (Path(CONFIG_PATH) / "model").glob("*.yaml")}
    args = iter(words[1:])
    for arg in args:
        if arg.startswith("--"):
            next(args, None) if "=" not in arg else None
        else:
            assert arg in networks or arg == PLACEHOLDER, (
                f"{arg}: not a network of conf/model ({sorted(networks)})"
            )


def check_make(words: list[str]) -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    for target in [w for w in words[1:] if not w.startswith("-") and "=" not in w]:
        assert target in targets, f"make {target}: no such target ({sorted(targets)})"


def check_command(words: list[str]) -> None:
    """One documented command, as the program it names would check it before any work."""
    program = Path(words[0]).name
    if program in entry_points():
        config_name = entry_points()[program]
        if config_name is None:
            check_models(words)
        else:
            for overrides in hydra_overrides(words[1:]):
                check_hydra(config_name, tuple(overrides))
    elif program.startswith("python"):
        check_python(words)
    elif program == "make":
        check_make(words)
    else:  # a shell script of the repository
        script = words[1] if program == "bash" else words[0]
        assert (ROOT / script).is_file(), f"{script}: no such script"


def problems(found: list[tuple[str, list[str]]]) -> tuple[list[str], set[str]]:
    """Each command of ``found`` that its program would refuse, where it is written and why
    (a line written twice is checked once, named at both places), and the distinct lines
    checked. A documented refusal (:data:`REFUSED`) must be refused, with its words."""
    verdicts: dict[str, str | None] = {}
    refused = []
    for where, words in found:
        line = " ".join(words)
        if line not in verdicts:
            try:
                check_command(words)
                verdicts[line] = "shown as refused, and taken" if line in REFUSED else None
            except (AssertionError, Exception) as exc:  # noqa: BLE001  (all, then fail)
                why = f"{type(exc).__name__}: {exc}"
                verdicts[line] = None if REFUSED.get(line, "\0") in str(exc) else why
        if verdicts[line] is not None:
            refused.append(f"{where}: {shlex.join(words)}\n    {verdicts[line]}")
    return refused, set(verdicts)


# -- the tests ----------------------------------------------------------------------------


def test_documented_commands_are_valid() -> None:
    start = time.perf_counter()
    found = doc_commands()
    assert len(found) > 300, f"only {len(found)} commands found in the docs"
    refused, checked = problems(found)
    assert not refused, f"{len(refused)} documented command(s) refused:\n" + "\n".join(refused)
    assert set(REFUSED) <= checked, f"documented refusals gone: {set(REFUSED) - checked}"
    print(f"{len(checked)} distinct commands checked in {time.perf_counter() - start:.1f} s")


PLANTED = """\
Some prose, `kdseg-train model=enet seed=2` inline, then a block:

```bash
kdseg-train model=enett data.root=/data/LiTS             # an unknown config choice
kdseg-distill teacher.ckpt=<run>/best.ckpt distill=emkd data.batchsize=4   # an unknown key
kdseg-eval ckpt=... +protocl=paper                        # a key the command never reads
kdseg-train -m model=enet,mobilenetv2 seed=1,2 \\
    trainer=ddpp                                           # a choice, after a continuation
kdseg-predict ckpt=best.ckpt input=a.nii.gz output=b/ batch_size=two
kdseg-models --widht 0.25 enet
python scripts/phantom_study.py --protocol v4 --stage data
make demo && make tests
kdseg-models --width 0.25 <a new network>
```
"""


def test_a_planted_stale_command_fails(tmp_path: Path) -> None:
    """A doc naming an unknown config choice, key or option fails the check, at its line."""
    doc = tmp_path / "planted.md"
    doc.write_text(PLANTED)
    refused, checked = problems(doc_commands((doc,), tmp_path))
    assert len(checked) == 11
    reasons = "\n".join(refused)
    for line, words in (
        (4, "model=enett: no model config of that name (did you mean model=enet?"),
        (5, "has no option 'data.batchsize' (did you mean data.batch_size=?)"),
        (6, "+protocl=paper: conf/eval.yaml has no option 'protocl'"),
        (7, "trainer=ddpp: no trainer config"),
        (9, "batch_size=two: expected a whole number"),
        (10, "--widht: not an option of kdseg/cli/models.py"),
        (11, "--stage: not an option of scripts/phantom_study.py"),
        (12, "make tests: no such target"),
    ):
        assert f"planted.md:{line}:" in reasons and words in reasons, (line, words, reasons)
    assert len(refused) == 8, reasons  # the inline command, make demo, a placeholder: taken


def test_cfg_job_refuses_what_the_command_refuses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--cfg job`` prints the config a command line composes: it runs the command's checks
    first (it printed ``thresold: 0.5`` and ``batch_size: abc``, which the command refuses),
    and still prints a good one."""
    from kdseg.cli import predict, train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    for main, argv, refusal in (
        (predict.main, ["--cfg", "job", "+thresold=0.5"], "has no option 'thresold'"),
        (train.main, ["--cfg", "job", "data.batch_size=abc"], "data.batch_size=abc: expected"),
        (train.main, ["-c", "all", "optim.lr=-1"], "optim.lr=-1: must be"),
        (train.main, ["--cfg=job", "model=raunet", "+model.base=32"], "no option 'model.base'"),
    ):
        monkeypatch.setattr("sys.argv", [f"kdseg-{main.__module__.rsplit('.')[-1]}", *argv])
        with pytest.raises(SystemExit) as stop:
            main()
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and refusal in err and len(err.splitlines()) == 1, err
    monkeypatch.setattr("sys.argv", ["kdseg-train", "--cfg", "job", "data.batch_size=4"])
    train.main()
    assert "batch_size: 4" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())  # no run folder


def test_extraction_reads_shell_lines(tmp_path: Path) -> None:
    """Comments, ``\\`` continuations, ``;`` / ``&&`` lists, env prefixes, placeholders; a
    sweep is one list per value, a placeholder choice left at its default."""
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```bash\nA=1 kdseg-train model=enet \\\n  seed=2   # a comment\nmake demo && x\n```\n"
        "and `kdseg-eval ckpt=<a run>/best.ckpt` inline\n"
    )
    lines = [(n, w) for n, t in snippets(doc) for w in shell_commands(t)]
    assert lines == [
        (2, ["kdseg-train", "model=enet", "seed=2"]),
        (4, ["make", "demo"]),
        (4, ["x"]),
        (6, ["kdseg-eval", f"ckpt={PLACEHOLDER}/best.ckpt"]),
    ]
    assert hydra_overrides(["-m", "model=enet,raunet", "teacher.ckpt=$T", "distill=..."]) == [
        ["teacher.ckpt=null", "model=enet"],
        ["teacher.ckpt=null", "model=raunet"],
    ]


if __name__ == "__main__":  # python tests/test_docs_commands.py: what is refused, and why
    refused, checked = problems(doc_commands())
    print("\n".join(refused) or "", f"{len(checked)} distinct commands checked", sep="\n")

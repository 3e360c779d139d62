"""The phantom study script's selection stage reads what ``kdseg-eval`` writes."""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script_at(path: Path):
    """A Python file imported as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _script(name: str):
    """A study script (scripts/<name>.py) imported as a module."""
    return _script_at(ROOT / "scripts" / f"{name}.py")


def _study_module():
    return _script("phantom_study")


def test_select_picks_the_best_validation_tumor_dice(tmp_path: Path, monkeypatch) -> None:
    """``select`` ranks the option runs by the validation summaries in the layout
    :func:`kdseg.eval.evaluate.write_results` writes (it once crashed on a wrong key)."""
    from kdseg.eval.evaluate import write_results

    ps = _study_module()
    study = ps.Study(ps.parse_args(["--dir", str(tmp_path)]))
    monkeypatch.setattr(study, "evaluate", lambda *args, **kwargs: None)
    scores = {m: 0.1 + 0.01 * i for i, m in enumerate(ps.NEW_OPTIONS)}
    best = ps.NEW_OPTIONS[2]
    scores[best] = 0.9
    for method, value in scores.items():
        run = (
            study.runs
            / "options"
            / f"{ps.TEACHER}-{ps.STUDENT}-w{ps.STUDENT_WIDTH}-{method}-s{ps.SELECT_SEED}"
        )
        summary = {"tumor": {"dice_per_case_nonempty": value}, "organ": {"dice_mean": 0.8}}
        write_results([], summary, run / ps.VAL_DIR, {"split": "val"})
    study.stage_select()
    selection = json.loads(study.selection_file.read_text())
    assert selection["selected"] == best == study.selected
    assert selection["val_tumor_dice"] == scores


def test_tumor_dice_refuses_a_split_without_tumor(tmp_path: Path) -> None:
    """A validation split with no tumor case has a null headline: ``tumor_dice`` did
    ``float(None)`` (a TypeError traceback); it is refused in one line naming the summary,
    as the pooled Dice over no case is (a ZeroDivisionError before)."""
    from kdseg.eval.evaluate import write_results

    protocols = _script("study_protocols")
    folder = tmp_path / "run" / protocols.VAL_DIR
    rows = [
        {
            "case": "volume-1",
            "organ": {"gt_empty": False, "dice": 0.9},
            "tumor": {"gt_empty": True, "dice": 1.0},
        }
    ]
    summary = {"tumor": {"dice_per_case_nonempty": None}, "organ": {"dice_mean": 0.9}}
    write_results(rows, summary, folder, {"split": "val"})
    with pytest.raises(SystemExit, match=r"summary\.json: no tumor Dice \(no case"):
        protocols.tumor_dice(folder)
    with pytest.raises(SystemExit, match="holds tumor: no tumor Dice"):
        protocols.tumor_dice(tmp_path / "run", (protocols.VAL_DIR,), {"volume-1"})
    assert protocols.pooled_dice(tmp_path / "run", (protocols.VAL_DIR,), "organ") == 0.9


def test_unlabeled_study_v2_commands(tmp_path: Path, monkeypatch) -> None:
    """Protocol v2 of the unlabeled study: the teacher is a cascade whose stage 1 is the
    student-alone run, its stage 2 trains at the organ-window ROI setting, and every student
    row runs at the 96 x 96 single-stage grid for 1,024 steps."""
    module = _unlabeled_module()
    study = module.StudyV2(module.parse_args(["--dir", str(tmp_path), "--protocol", "v2"]))
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(study, "run", lambda command, *args: calls.append((command, *args)))
    study.train("teacher", 2, module.TEACHER)
    assert calls[0][0] == calls[1][0] == "train"
    assert "data.preprocess={body_crop: true, in_plane_size: [96, 96]}" in calls[0]
    assert "trainer.max_steps=1024" in calls[0] and "model=enet" in calls[0]
    assert {"data.preprocess.window_level=organ", "optim.lr=1e-3", "model=raunet"} <= set(calls[1])
    stage1 = tmp_path / "runs" / "alone" / "s2" / "checkpoints" / "best.ckpt"
    stage2 = tmp_path / "runs" / "teacher" / "s2" / "checkpoints" / "best.ckpt"
    assert study.teacher_ckpt(2) == f"[{stage1},{stage2}]"
    monkeypatch.setattr(study, "predictions", lambda seed: tmp_path / "labels")
    study.soft(2)
    assert calls[-1][0] == "distill" and f"teacher.predictions={tmp_path / 'labels'}" in calls[-1]
    assert "distill=kd" in calls[-1] and "trainer.max_steps=1024" in calls[-1]


def test_unlabeled_study_v3_is_v2_on_whole_15_50_mm_tumors(tmp_path: Path, monkeypatch) -> None:
    """Protocol v3: v2's rows, phantoms with 15-50 mm tumors, a 2,048-step stage 2."""
    module = _unlabeled_module()
    args = module.parse_args(["--dir", str(tmp_path), "--protocol", "v3", "--pilot"])
    study = module.PROTOCOLS[args.protocol](args)
    assert isinstance(study, module.StudyV2) and study.pilot
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(study, "run", lambda command, *args: calls.append((command, *args)))
    study.train("teacher", 1, module.TEACHER)
    assert "trainer.max_epochs=32" in calls[1] and "trainer.max_epochs=32" not in calls[0]
    monkeypatch.setattr(module.os, "symlink", lambda *a: None)
    study.labeled.mkdir(parents=True)  # kdseg-phantom (not run here) would make it
    study.data()
    phantoms = [c for c in calls if c[0] == "phantom"]
    assert len(phantoms) == 2
    assert all("params={tumor_mm_range: [15, 50]}" in c for c in phantoms)


def _study_commands(ps, study) -> list[tuple[str, ...]]:
    """Every command line of a study's stages up to the report, with Study.run captured."""
    calls: list[tuple[str, ...]] = []
    study.run = lambda command, *args: calls.append((command, *args))
    study.dir.mkdir(parents=True, exist_ok=True)
    study.selection_file.write_text(json.dumps({"selected": "dkd"}))
    for stage in ("data", "teachers", "students", "options", "main", "ablations", "mobilenet"):
        getattr(study, f"stage_{stage}")()
    name = f"{ps.TEACHER}-{ps.STUDENT}-w{ps.STUDENT_WIDTH}-dkd-s{ps.SELECT_SEED}"
    study.evaluate("select", [study.runs / "options" / name], "val", ps.VAL_DIR)
    run = study.runs / "students" / f"{ps.STUDENT}-w{ps.STUDENT_WIDTH}-s1"
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    study.stage_eval()
    study.stage_report()
    return calls


WINDOW = ("data.preprocess.window_level=organ", "data.preprocess.window=[-100,100]")


def test_phantom_study_v3_commands_unchanged(tmp_path: Path) -> None:
    """v3 (the default) keeps its command lines: no preprocessing override, one teacher per
    seed (no ``study.teacher_seed``), the generator's default 40 phantoms."""
    ps = _study_module()
    study = ps.Study(ps.parse_args(["--dir", str(tmp_path)]))
    calls = _study_commands(ps, study)
    data, runs = tmp_path / "data" / "lits", tmp_path / "runs"
    common = (
        f"data.root={data}",
        f"data.cache_root={tmp_path / 'cache'}",
        f"paths.runs_dir={runs}",
    )
    launcher = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert calls[0] == (
        "phantom",
        "dataset=lits",
        f"root={data}",
        "n_cases=40",
        "seed=0",
        "params={}",
    )
    assert calls[1] == ("prepare", "experiment=phantom_study_v3", *common)
    assert calls[2] == (
        "train", "-m", "experiment=phantom_study_v3", *common, "model=raunet", "model.width=0.5",
        "seed=1,2,3,4,5", f"hydra.sweep.dir={runs / 'teachers'}", *launcher,
    )  # fmt: skip
    assert calls[6] == (
        "distill", "-m", "experiment=phantom_study_v3_distill", *common, "teacher.name=raunet",
        "student=enet", "student.width=0.25", "distill=emkd,kd,at,cwd,dkd", "seed=1,2,3,4,5",
        "study.teacher_width=0.5", f"hydra.sweep.dir={runs / 'main'}", *launcher,
    )  # fmt: skip
    ckpt = runs / "students" / "enet-w0.25-s1" / "checkpoints" / "best.ckpt"
    assert calls[-2] == (
        "eval", "-m", "experiment=phantom_study_v3", *common, "split=test", f"ckpt={ckpt}",
        f"hydra.sweep.dir={tmp_path / '.eval-sweep-test'}", "hydra.sweep.subdir=${hydra.job.num}",
        *launcher,
    )  # fmt: skip
    assert [c[0] for c in calls] == [
        "phantom", "prepare", "train", "train", "train", "distill", "distill", "distill",
        "distill", "eval", "eval", "report",
    ]  # fmt: skip
    flat = [a for c in calls for a in c]
    assert not [a for a in flat if a.startswith(("study.teacher_seed", "data.preprocess"))]


def test_phantom_study_v4_commands(tmp_path: Path) -> None:
    """v4 (docs/study_v4/pilots/p14_run.sh): P13's phantoms, the organ window on every command
    that builds data, ONE 8,192-step seed-1 teacher shared by every distillation run."""
    ps = _study_module()
    study = ps.Study(ps.parse_args(["--dir", str(tmp_path), "--protocol", "v4"]))
    calls = _study_commands(ps, study)
    phantom, prepare, teachers, enet, mobilenet, *distills, val, test, report = calls
    assert phantom[0] == "phantom" and "n_cases=60" in phantom and "seed=0" in phantom
    assert "params={tumor_mm_range: [15, 50], tumor_depth: 1}" in phantom
    assert prepare[0] == "prepare" and set(WINDOW) <= set(prepare)
    for call in (teachers, enet, mobilenet, *distills, val, test):
        assert set(WINDOW) <= set(call), call[0]
        assert (
            "experiment=phantom_study_v3" in call or "experiment=phantom_study_v3_distill" in call
        )
    assert teachers[0] == "train" and "model=raunet" in teachers and "seed=1" in teachers
    assert {"optim.lr=1e-3", "trainer.max_epochs=128"} <= set(teachers)
    for student in (enet, mobilenet):
        assert not [a for a in student if a.startswith(("optim.", "trainer."))]
    assert "seed=1,2,3,4,5" in enet and "seed=1,2,3" in mobilenet
    assert [c[0] for c in distills] == ["distill"] * 4 and len(distills) == 4
    assert all("study.teacher_seed=1" in c for c in distills)
    assert "seed=1,2,3,4,5" in distills[1] and "distill=emkd,kd,at,cwd,dkd" in distills[1]
    assert "seed=1,2,3" in distills[2] and "seed=1,2,3" in distills[3]
    assert "split=val" in val and "split=test" in test and report[0] == "report"
    # only the stage folders that exist (here: the one student run the helper made)
    assert report[1] == f"runs=[{tmp_path / 'runs' / 'students'}]"
    assert study.teacher_seeds == [1]


@pytest.mark.parametrize("option", ["channels_last", "compile"])
def test_phantom_study_speed_options_reach_the_named_networks_only(
    option: str, tmp_path: Path
) -> None:
    """``--channels-last raunet,mobilenetv2`` (or ``--compile``): the teacher trains and runs
    with the option, as does MobileNetV2 alone and distilled; ENet alone and distilled keep the
    default, and the reuse checks compare with what this study trains."""
    ps = _study_module()
    flag = f"--{option.replace('_', '-')}"
    argv = ["--dir", str(tmp_path), "--protocol", "v4", flag, "raunet,mobilenetv2"]
    study = ps.Study(ps.parse_args(argv))
    calls = _study_commands(ps, study)
    _, _, teachers, enet, mobilenet, *distills, _, _, _ = calls
    assert f"model.{option}=true" in teachers and f"model.{option}=true" in mobilenet
    assert not [a for a in enet if option in a]
    for call in distills:
        assert f"teacher.{option}=true" in call
        assert (f"student.{option}=true" in call) == ("student=mobilenetv2" in call)
    assert any("student=mobilenetv2" in c for c in distills)
    plain = ps.Study(ps.parse_args(["--dir", str(tmp_path / "b"), "--protocol", "v4"]))
    assert not [a for c in _study_commands(ps, plain) for a in c if option in a]
    # the reuse checks compare with what this study trains: a default teacher differs
    assert study.teacher_config(1)["model"][option] is True
    t14 = _teacher_run(tmp_path / "T14", 128, "/somewhere/else/lits")
    with pytest.raises(SystemExit, match=rf"model\.{option}: <missing> != True"):
        ps.Study(ps.parse_args([*argv, "--teacher-from", str(t14)]))
    name = f"{ps.TEACHER}-mobilenetv2-w{ps.STUDENT_WIDTH}-emkd-s1"
    config = study.run_config("mobilenet", name)
    assert config["student"][option] is True and config["teacher"][option]
    with pytest.raises(SystemExit, match=f"{flag} rauent: not a network this study"):
        ps.Study(ps.parse_args(["--dir", str(tmp_path), flag, "rauent"]))


def test_phantom_study_teacher_cache_reaches_every_distillation_run(tmp_path: Path) -> None:
    """``--teacher-cache DIR``: every distillation run shares one teacher cache (bit-exact, so
    no reuse check compares it); the teacher and the students alone do not use one."""
    ps = _study_module()
    argv = ["--dir", str(tmp_path), "--protocol", "v4", "--teacher-cache", "cache"]
    calls = _study_commands(ps, ps.Study(ps.parse_args(argv)))
    cache = f"teacher.cache={Path('cache').resolve()}"
    distills = [c for c in calls if c[0] == "distill"]
    assert len(distills) == 4 and all(cache in c for c in distills)
    assert not [c for c in calls if c[0] != "distill" and any("teacher.cache" in a for a in c)]
    assert "teacher.cache" not in ps.DISTILL_KEYS


def _teacher_run(folder: Path, max_epochs: int, data_root: str) -> Path:
    """A finished-looking teacher run: pilot T13's saved config with two keys changed."""
    import yaml

    config = yaml.safe_load(
        (ROOT / "docs/study_v4/pilots/T13-raunet-w0.5-4096/config.yaml").read_text()
    )
    config["trainer"]["max_epochs"] = max_epochs
    config["data"]["root"] = data_root
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "best.ckpt").write_bytes(b"not a real checkpoint")
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "summary.json").write_text("{}")
    return folder


def test_teacher_from_checks_the_config(tmp_path: Path) -> None:
    """--teacher-from reuses a run only when it trained v4's teacher: T13's 4,096 steps are
    refused, the same config with 8,192 steps (and another data.root) is copied in. The saved
    configs predate options added since (``data.unlabeled_roi_labels``): an option left at
    null is no difference."""
    import pytest

    ps = _study_module()
    args = ["--dir", str(tmp_path / "study"), "--protocol", "v4", "--teacher-from"]
    t13 = ROOT / "docs/study_v4/pilots/T13-raunet-w0.5-4096"
    with pytest.raises(SystemExit, match="no checkpoints/best.ckpt"):
        ps.Study(ps.parse_args([*args, str(t13)]))
    short = _teacher_run(tmp_path / "T13", 64, "/work/pilot13/data/lits")
    with pytest.raises(SystemExit, match=r"trainer\.max_epochs: 64 != 128$"):
        ps.Study(ps.parse_args([*args, str(short)]))
    t14 = _teacher_run(tmp_path / "T14", 128, "/somewhere/else/lits")
    with pytest.raises(SystemExit, match=r"trainer\.max_epochs: 128 != 16"):  # v3's teacher
        ps.Study(ps.parse_args([*args[:2], "--teacher-from", str(t14)]))
    study = ps.Study(ps.parse_args([*args, str(t14)]))
    assert study.teacher_from == {1: t14}
    calls: list[tuple[str, ...]] = []
    study.run = lambda command, *a: calls.append((command, *a))
    study.stage_teachers()
    copied = study.runs / "teachers" / "raunet-w0.5-s1"
    assert (copied / "checkpoints" / "best.ckpt").read_bytes() == b"not a real checkpoint"
    assert (copied / "summary.json").exists() and calls == []  # nothing left to train


def test_data_from_checks_the_phantoms(tmp_path: Path) -> None:
    """--data-from accepts a folder whose phantom_truth.json records v4's seed and parameters
    for exactly its 60 cases, and refuses any other."""
    import pytest

    from kdseg.data.phantom import PhantomConfig, case_seed
    from kdseg.data.phantom.dataset import _config_digest, _config_digests

    ps = _study_module()
    source = tmp_path / "lits"
    source.mkdir()
    v4 = PhantomConfig(dataset="lits", tumor_mm_range=(15, 50), tumor_depth=1)
    digest = "3e34a7962e484b5c"  # what /work/pilot13/data/lits records (P13, P14)
    assert digest in _config_digests(v4)  # (recorded before the ints were normalised)
    assert _config_digest(v4) in _config_digests(v4)
    truth = {f"volume-{i}": {"seed": case_seed(0, i), "config": digest} for i in range(60)}
    for i in range(60):
        (source / f"volume-{i}.nii.gz").write_bytes(b"")
        (source / f"segmentation-{i}.nii.gz").write_bytes(b"")
    (source / "phantom_truth.json").write_text(json.dumps(truth))
    (source / "kdseg_split.json").write_text("{}")
    args = ["--dir", str(tmp_path / "study"), "--data-from", str(source)]
    with pytest.raises(SystemExit, match="not 40"):  # v3's phantoms: 40 default cases
        ps.Study(ps.parse_args(args))
    study = ps.Study(ps.parse_args([*args, "--protocol", "v4"]))
    calls: list[tuple[str, ...]] = []
    study.run = lambda command, *a: calls.append((command, *a))
    study.stage_data()
    assert (study.data / "volume-59.nii.gz").exists()
    assert not (study.data / "kdseg_split.json").exists()  # kdseg-prepare makes its own
    assert [c[0] for c in calls] == ["phantom", "prepare"]
    assert f"data.cache_root={study.dir / 'cache'}" in calls[1]  # the cache in the study folder
    store = study.dir / "cache" / "lits-0123abcd" / "kdseg_split.json"  # what prepare persists
    store.parent.mkdir(parents=True)
    store.write_text("{}")
    study.stage_data()  # the data stage is done: nothing run again
    assert [c[0] for c in calls] == ["phantom", "prepare"]
    truth["volume-7"]["config"] = _config_digest(PhantomConfig(dataset="lits"))
    (source / "phantom_truth.json").write_text(json.dumps(truth))
    with pytest.raises(SystemExit, match="volume-7 was drawn"):
        ps.Study(ps.parse_args([*args, "--protocol", "v4"]))


def _unlabeled_module():
    return _script("unlabeled_study")


def test_unlabeled_study_v5_commands(tmp_path: Path, monkeypatch) -> None:
    """Protocol v5: study v4's stage-2 regime for every row, ONE teacher labelling the scans
    through the cascade [stage 1, teacher], the soft row with emkd_balanced and the scans'
    boxes from those labels, and a --teacher-from run whose config differs refused."""
    module = _unlabeled_module()
    args = module.parse_args(["--dir", str(tmp_path), "--protocol", "v5"])
    study = module.PROTOCOLS[args.protocol](args)
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(study, "run", lambda command, *args: calls.append((command, *args)))
    study.train("alone", 2, module.STUDENT)
    window = {"data.preprocess.window_level=organ", "data.preprocess.window=[-100,100]"}
    assert calls[-1][0] == "train" and "experiment=phantom_study_v3" in calls[-1]
    assert window <= set(calls[-1]) and "seed=2" in calls[-1] and "model=enet" in calls[-1]
    study.soft(3)
    teacher = next(c for c in calls if "model=raunet" in c)
    stage1 = next(c for c in calls if "trainer.max_steps=1024" in c)
    pseudo = next(c for c in calls if c[0] == "pseudolabel")
    assert teacher[0] == "train" and "trainer.max_epochs=128" in teacher and "seed=1" in teacher
    assert (
        stage1[0] == "train"
        and "data.preprocess={body_crop: true, in_plane_size: [96, 96]}" in stage1
    )
    assert (
        pseudo[1]
        == f"ckpt=[{study.stage1()}/checkpoints/best.ckpt,{study.teacher()}/checkpoints/best.ckpt]"
    )
    soft = next(c for c in calls if c[0] == "distill")
    assert soft[:2] == ("distill", "experiment=phantom_study_v3_distill")
    assert {"distill=emkd_balanced", "seed=3", "data.unlabeled_fraction=0.5"} <= set(soft)
    assert f"data.unlabeled_roi_labels={tmp_path / 'pseudo' / 'all-s1'}" in soft
    assert study.pseudolabels(2, False) == study.pseudolabels(3, False)  # one teacher's labels
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints" / "best.ckpt").write_bytes(b"not a real checkpoint")
    (other / "summary.json").write_text("{}")
    (other / "config.yaml").write_text("seed: 1\nmodel: {name: raunet, width: 0.25}\n")
    args = module.parse_args(["--dir", str(tmp_path / "b"), "--protocol", "v5"])
    args.teacher_from = str(other)
    with pytest.raises(SystemExit, match="--teacher-from differs"):
        module.PROTOCOLS["v5"](args).teacher()


def test_unlabeled_results_table_paired_interval() -> None:
    """The table's paired difference is the mean per-seed difference to alone with a
    Student-t 95% interval, and the gap closed is measured against the teacher's mean."""
    module = _unlabeled_module()
    rows = {"teacher": 0.9, "alone": 0.5, "soft": 0.7, "pseudo": 0.5, "filtered": 0.4}
    offsets = {1: -0.1, 2: 0.0, 3: 0.1}
    scores = {
        row: {
            s: {
                name: {"dice_per_case_nonempty": base + (offsets[s] if row == "soft" else 0)}
                for name in ("organ", "tumor")
            }
            for s in offsets
        }
        for row, base in rows.items()
    }
    inits = {row: dict.fromkeys(offsets, "abc") for row in rows}
    table = module.results_table(scores, inits, [1, 2, 3], "dice_per_case_nonempty", 12)
    soft = next(line for line in table.splitlines() if line.startswith("| soft "))
    # diffs 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t(0.975, 2) = 4.303 -> half width 0.248
    assert "+0.200 [-0.048, +0.448]" in soft and "50%" in soft
    assert "identical weights per seed: True" in table


def _fake_eval(run: Path, out_dir: str, dice: dict[str, float], organ: float = 0.9) -> None:
    """An evaluation folder as kdseg-eval writes it: per-case tumor rows and the summary."""
    from kdseg.eval.evaluate import write_results

    rows = [{"case": c, "tumor": {"gt_empty": False, "dice": d}} for c, d in dice.items()]
    mean = sum(dice.values()) / len(dice)
    summary = {
        "tumor": {"dice_per_case_nonempty": mean},
        "organ": {"dice_per_case_nonempty": organ},
    }
    write_results(rows, summary, run / out_dir, {})


def test_phantom_study_v5_splits_candidates_and_dev_selection(tmp_path: Path) -> None:
    """v5 (docs/study_v5/protocol.md): v4's generator call with 84 cases, whose first 60 are
    split as kdseg splits 60 cases (v4's split) and whose last 24 are the test split; the dev
    split is v4's val + test. Three candidates train seeds 1-3; dev-select keeps v4's option
    unless a candidate beats it by the margin; confirm trains the new one's seeds 4-5."""
    from kdseg.data.manifest import make_split, read_split, write_split

    ps = _study_module()
    study = ps.Study(ps.parse_args(["--dir", str(tmp_path), "--protocol", "v5"]))
    calls: list[tuple[str, ...]] = []
    study.run = lambda command, *args: calls.append((command, *args))
    study.stage_data()
    assert (
        "n_cases=84" in calls[0] and "params={tumor_mm_range: [15, 50], tumor_depth: 1}" in calls[0]
    )
    split = json.loads((study.data / "kdseg_split.json").read_text())
    v4 = make_split([f"volume-{i}" for i in range(60)])
    assert (split["train"], split["val"]) == (v4["train"], v4["val"]) and split["fresh_from"] == 60
    assert split["test"] == sorted(f"volume-{i}" for i in range(60, 84))
    dev = study.fresh_split()[1]
    assert dev["test"] == sorted(v4["val"] + v4["test"]) and len(dev["test"]) == 18
    write_split(dev, tmp_path / "dev.json")
    assert read_split(tmp_path / "dev.json")["test"] == dev["test"]  # kdseg-eval accepts it

    calls.clear()
    study.stage_candidates()
    (sweep,) = calls
    assert "distill=emkd_balanced_pmd1,emkd_balanced_t1,emkd_balanced_region" in sweep
    assert "seed=1,2,3" in sweep and "study.teacher_seed=1" in sweep and set(WINDOW) <= set(sweep)

    with pytest.raises(SystemExit, match="dev-select stage before the eval stage"):
        study.stage_eval()  # no test number before the dev choice
    study.selection_file.write_text(json.dumps({"selected": "emkd_balanced"}))
    runs = study.v5_runs
    evaluated: list[Path] = []
    study.evaluate_each = lambda chosen, out_dir, *o: evaluated.extend(chosen)
    cases = dev["test"]

    def dev_scores(gain: dict[str, float]) -> None:
        for method, seeds in runs.items():
            for seed, run in seeds.items():
                value = 0.6 + 0.01 * seed + gain.get(method, 0.0)
                _fake_eval(run, ps.DEV_DIR, dict.fromkeys(cases, value))

    dev_scores({"emkd_balanced": 0.05, "emkd_balanced_t1": 0.055, "emkd_balanced_pmd1": 0.01})
    study.stage_dev_select()
    record = json.loads(study.selection_v5_file.read_text())
    assert record["selected"] == "emkd_balanced"  # +0.005 is inside the margin
    assert record["dev_score"]["emkd_balanced_t1"] == pytest.approx(0.055)
    assert len(evaluated) == 15 and all(p.name.endswith(("-s1", "-s2", "-s3")) for p in evaluated)
    calls.clear()
    study.stage_confirm()
    assert calls == []  # v4's option already has seeds 1-5

    dev_scores({"emkd_balanced": 0.05, "emkd_balanced_region": 0.07})
    study.stage_dev_select()
    assert json.loads(study.selection_v5_file.read_text())["selected"] == "emkd_balanced_region"
    study.stage_confirm()
    (confirm,) = calls
    assert "distill=emkd_balanced_region" in confirm and "seed=1,2,3,4,5" in confirm
    assert f"hydra.sweep.dir={study.runs / 'candidates'}" in confirm
    assert study.timings["confirm"]["runs"] == 5 and study.timings["candidates"]["runs"] == 9


def test_phantom_study_v5_endpoint(tmp_path: Path) -> None:
    """The endpoint: the selected option's fresh-test gap closed and paired interval over
    seeds 1-5, and the same over v4's test cases and the fresh ones pooled (per-case rows)."""
    ps = _study_module()
    study = ps.Study(ps.parse_args(["--dir", str(tmp_path), "--protocol", "v5"]))
    study.run = lambda *a: None
    study.evaluate_each = lambda *a: None
    study.selection_file.parent.mkdir(parents=True, exist_ok=True)
    study.selection_file.write_text(json.dumps({"selected": "emkd_balanced"}))
    study.selection_v5_file.write_text(json.dumps({"selected": "emkd_balanced_t1"}))
    split, dev = study.fresh_split()
    old_test = sorted(set(dev["test"]) - set(split["val"]))
    gains = {"alone": 0.0, "emkd": 0.01, "emkd_balanced": 0.04, "emkd_balanced_t1": 0.06}
    runs = study.v5_runs
    for method, gain in gains.items():
        for seed, run in runs[method].items():
            value = 0.6 + gain + (0.001 * seed if method != "alone" else 0.0)
            _fake_eval(run, ps.EVAL_DIR, dict.fromkeys(split["test"], value))
            # dev rows: the v4 val cases must not enter the pooled score
            _fake_eval(
                run,
                ps.DEV_DIR,
                {**dict.fromkeys(old_test, value - 0.1), **dict.fromkeys(split["val"], 9.0)},
            )
    teacher = study.runs / "teachers" / "raunet-w0.5-s1"
    _fake_eval(teacher, ps.EVAL_DIR, dict.fromkeys(split["test"], 0.7))
    _fake_eval(
        teacher, ps.DEV_DIR, {**dict.fromkeys(old_test, 0.6), **dict.fromkeys(split["val"], 9.0)}
    )
    study.endpoint()
    result = json.loads((tmp_path / "endpoint.json").read_text())
    fresh = result["rows"]["emkd_balanced_t1"]["fresh"]
    assert fresh["paired"][0] == pytest.approx(0.063)  # 0.06 + mean(0.001 s) over seeds 1-5
    assert fresh["gap_closed"] == pytest.approx(0.063 / 0.1)
    assert fresh["paired"][1] > 0 and result["target_met"] is True
    pooled = result["rows"]["emkd_balanced_t1"]["pooled"]
    # 24 fresh cases at 0.6 + g and 12 old test cases at 0.5 + g; teacher 0.7 and 0.6
    assert pooled["per_seed"]["1"] == pytest.approx((24 * 0.661 + 12 * 0.561) / 36)
    assert pooled["gap_closed"] == pytest.approx(0.063 / 0.1)
    assert result["teacher"]["pooled"] == pytest.approx((24 * 0.7 + 12 * 0.6) / 36)
    assert set(result["rows"]) == {"emkd", "emkd_balanced", "emkd_balanced_t1"}


def test_runs_from_copies_only_runs_with_this_studys_config(tmp_path: Path) -> None:
    """--runs-from copies an earlier study's finished run (another data.root is fine) without
    its evaluations, and refuses one whose config differs (here: its distillation recipe) or
    whose teacher checkpoint is not byte-identical to this study's teacher."""
    import yaml

    ps = _study_module()
    study = ps.Study(ps.parse_args(["--dir", str(tmp_path / "v5"), "--protocol", "v5"]))
    source = tmp_path / "v4" / "runs"
    teacher = source / "teachers" / "raunet-w0.5-s1"
    names = {
        "teachers": teacher.name,
        "students": "enet-w0.25-s2",
        "main": "raunet-enet-w0.25-emkd_balanced-s1",
    }

    def finished(stage: str, name: str, config: dict) -> Path:
        config["data"]["root"] = "/elsewhere/lits"
        if "teacher" in config:  # a distillation run: it learnt from the source's teacher
            config["teacher"]["ckpt"] = str(teacher / "checkpoints" / "best.ckpt")
        run = source / stage / name
        (run / "eval-test-full").mkdir(parents=True)
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "best.ckpt").write_bytes(name.encode())
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        (run / "summary.json").write_text("{}")
        return run

    for stage, name in names.items():
        finished(stage, name, study.run_config(stage, name))
    (source / "main" / "unfinished-s9").mkdir()  # no summary.json: not copied
    study.reuse_runs(source)
    for stage, name in names.items():
        copied = study.runs / stage / name
        assert (copied / "summary.json").exists() and not (copied / "eval-test-full").exists()
        assert (copied / "copied_from.txt").read_text().strip() == str(source / stage / name)
    assert not (study.runs / "main" / "unfinished-s9").exists()
    assert not list((tmp_path / "v5" / ".partial").rglob("summary.json"))  # renamed into place
    config = study.run_config("main", "raunet-enet-w0.25-emkd-s3")
    config["distill"]["terms"]["pmd"]["weight"] = 1.0
    run = finished("main", "raunet-enet-w0.25-emkd-s3", config)
    with pytest.raises(SystemExit, match=r"distill\.terms\.pmd\.weight: 1\.0 != 0\.1"):
        study.reuse_runs(source)
    shutil.rmtree(run)
    other = tmp_path / "other-teacher.ckpt"
    other.write_bytes(b"another teacher")
    config = study.run_config("main", "raunet-enet-w0.25-kd-s1")
    run = finished("main", "raunet-enet-w0.25-kd-s1", config)
    config["teacher"]["ckpt"] = str(other)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit, match="is not this study's"):
        study.reuse_runs(source)


def test_run_config_matches_the_configs_study_v4_saved() -> None:
    """The config a stage would train each run with, as :meth:`Study.run_config` composes it,
    is the one study v4's runs saved (docs/study_v4/; paths aside): --runs-from's check
    compares against the real thing, not against itself."""
    import yaml

    ps = _study_module()
    study = ps.Study(ps.parse_args(["--dir", "/nonexistent/v5", "--protocol", "v5"]))
    for stage, name in [
        ("teachers", "raunet-w0.5-s1"),
        ("students", "enet-w0.25-s3"),
        ("students", "mobilenetv2-w0.25-s2"),
        ("main", "raunet-enet-w0.25-emkd_balanced-s4"),
        ("ablations", "raunet-enet-w0.25-emkd_imd_rad-s2"),
        ("mobilenet", "raunet-mobilenetv2-w0.25-emkd-s1"),
    ]:
        saved = yaml.safe_load((ROOT / "docs/study_v4" / stage / name / "config.yaml").read_text())
        keys = ps.RUN_KEYS if stage in ("teachers", "students") else ps.DISTILL_KEYS
        assert ps.config_diff(study.run_config(stage, name), saved, keys) == [], name


def test_unlabeled_study_v6_cuts_the_students_labels_to_six(tmp_path: Path, monkeypatch) -> None:
    """Protocol v6: the student rows (alone, soft, pseudo, control) train on data/few, whose
    split keeps v5's val and test and 6 of the 42 training cases (seeded); the teacher, its
    stage 1 and the pseudo-labels stay on the 42 labeled cases."""
    import random

    module = _unlabeled_module()
    args = module.parse_args(["--dir", str(tmp_path), "--protocol", "v6"])
    study = module.PROTOCOLS[args.protocol](args)
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(study, "run", lambda command, *args: calls.append((command, *args)))
    ids = [f"volume-{i}" for i in range(60)]
    split = {"train": ids[:42], "val": ids[42:48], "test": ids[48:]}
    study.labeled.mkdir(parents=True)
    (study.labeled / "kdseg_split.json").write_text(json.dumps(split))
    for i in range(60):
        (study.labeled / f"volume-{i}.nii.gz").write_bytes(b"")
        (study.labeled / f"segmentation-{i}.nii.gz").write_bytes(b"")
    study.unlabeled.mkdir(parents=True)
    (study.unlabeled / "done").write_text("")  # v5's data: present
    split_at_prepare: list[bool] = []

    def run(command: str, *args: str) -> None:
        calls.append((command, *args))
        if command == "prepare":  # kdseg-prepare draws a split of its own if none is there
            split_at_prepare.append((tmp_path / "data" / "few" / "kdseg_split.json").exists())

    monkeypatch.setattr(study, "run", run)
    study.data()
    assert split_at_prepare == [True] and (tmp_path / "data" / "few" / "done").exists()
    study.data()  # done: nothing again
    assert split_at_prepare == [True]
    few = json.loads((tmp_path / "data" / "few" / "kdseg_split.json").read_text())
    assert few["train"] == sorted(random.Random(0).sample(sorted(split["train"]), 6))
    assert (few["val"], few["test"]) == (split["val"], split["test"])
    assert (tmp_path / "data" / "few" / f"volume-{few['train'][0].split('-')[1]}.nii.gz").exists()
    assert calls[-1][0] == "prepare" and f"data.root={tmp_path / 'data' / 'few'}" in calls[-1]
    study.train("alone", 2, module.STUDENT)
    assert f"data.root={study.student_root}" in calls[-1]
    study.soft(1)
    teacher = next(c for c in calls if "model=raunet" in c)
    assert f"data.root={study.labeled}" in teacher  # the teacher: all 42 labeled cases
    soft = calls[-1]
    assert soft[0] == "distill" and f"data.root={study.student_root}" in soft
    study.distill_row("control", 1, "teacher.name=raunet")  # the control: soft without scans
    control = calls[-1]
    keep = lambda args: [a for a in args if not a.startswith(("data.unlabeled", "hydra.run"))]  # noqa: E731
    assert keep(soft) == keep(control) and "teacher.name=raunet" in control
    pseudo = tmp_path / "pseudo" / "all-s1"
    (pseudo / "labelsTr").mkdir(parents=True)
    (pseudo / "imagesTr").mkdir()
    for n in range(3):
        (pseudo / "labelsTr" / f"scan-{n:03d}.nii.gz").write_bytes(b"")
    (pseudo / "dataset.json").write_text("{}")
    combined = json.loads((study.combined(1, False) / "kdseg_split.json").read_text())
    assert combined["train"] == few["train"] + ["scan-000", "scan-001", "scan-002"]


def test_phantom_study_v6_second_round(tmp_path: Path) -> None:
    """v6 (docs/study_v6/protocol.md): v5's split stays (test 60-83); dev 2 is v4's val + test
    and v5's fresh cases (42), fresh test 2 is 108-131 (84-107 are in no split); three
    candidates train seeds 1-3; dev2-select keeps v5's option unless a candidate beats it by
    the margin; endpoint2 scores every row on fresh test 2 and reads the target."""
    from kdseg.data.manifest import make_split

    ps = _study_module()
    study = ps.Study(ps.parse_args(["--dir", str(tmp_path), "--protocol", "v6"]))
    calls: list[tuple[str, ...]] = []
    study.run = lambda command, *args: calls.append((command, *args))
    study.check_phantoms = lambda root: None
    study.stage_data()
    assert "n_cases=132" in calls[0]
    split = json.loads((study.data / "kdseg_split.json").read_text())
    assert split["test"] == sorted(f"volume-{i}" for i in range(60, 84))
    study.stage_data2()
    v4 = make_split([f"volume-{i}" for i in range(60)])
    dev2 = json.loads(study.dev2_split_file.read_text())
    assert dev2["test"] == sorted(v4["val"] + v4["test"] + split["test"]) and dev2["val"] == []
    fresh2 = json.loads(study.fresh2_split_file.read_text())
    assert fresh2["test"] == sorted(f"volume-{i}" for i in range(108, 132))
    assert (fresh2["train"], fresh2["val"]) == (v4["train"], v4["val"])
    assert not {f"volume-{i}" for i in range(84, 108)} & {
        c for part in fresh2.values() for c in part
    }

    calls.clear()
    study.stage_candidates2()
    (sweep,) = calls
    assert "distill=" + ",".join(ps.PROTOCOLS["v6"].candidates2) in sweep and "seed=1,2,3" in sweep
    with pytest.raises(SystemExit, match="dev2-select stage before endpoint2"):
        study.stage_endpoint2()  # no fresh-2 number before the choice

    study.selection_file.write_text(json.dumps({"selected": "emkd_balanced"}))  # v4's option
    study.selection_v5_file.write_text(json.dumps({"selected": "emkd_balanced_region"}))
    evaluated: list[Path] = []
    study.evaluate_each = lambda chosen, out_dir, *o: evaluated.extend(chosen)
    methods = ["emkd_balanced_region", *ps.PROTOCOLS["v6"].candidates2]
    runs = study.method_runs(methods)
    assert runs["emkd_balanced_region"][1].parent.name == "candidates"
    assert runs["emkd_balanced_region_at"][1].parent.name == "candidates2"

    def dev_scores(gain: dict[str, float]) -> None:
        for method, seeds in runs.items():
            for run in seeds.values():
                _fake_eval(run, ps.DEV2_DIR, dict.fromkeys(dev2["test"], 0.6 + gain.get(method, 0)))

    dev_scores({"emkd_balanced_region": 0.05, "emkd_balanced_region_at": 0.059})
    study.stage_dev2_select()
    assert json.loads(study.selection_v6_file.read_text())["selected"] == "emkd_balanced_region"
    assert len(evaluated) == 15
    calls.clear()
    study.stage_confirm2()
    assert calls == []
    dev_scores({"emkd_balanced_region": 0.05, "emkd_balanced_region_w2": 0.07})
    study.stage_dev2_select()
    assert json.loads(study.selection_v6_file.read_text())["selected"] == "emkd_balanced_region_w2"
    study.stage_confirm2()
    (confirm,) = calls
    assert "distill=emkd_balanced_region_w2" in confirm and "seed=1,2,3,4,5" in confirm

    evaluated.clear()
    every = study.method_runs(
        ["emkd_balanced_region_w2", "emkd_balanced_region", "emkd_balanced", *ps.MAIN_METHODS]
    )
    gains = {"alone": 0.0, "emkd_balanced_region_w2": 0.055}
    for method, seeds in every.items():
        for seed, run in seeds.items():
            value = 0.6 + gains.get(method, 0.02) + (0.001 * seed if method != "alone" else 0.0)
            _fake_eval(run, ps.FRESH2_DIR, dict.fromkeys(fresh2["test"], value))
    _fake_eval(
        study.runs / "teachers" / "raunet-w0.5-s1",
        ps.FRESH2_DIR,
        dict.fromkeys(fresh2["test"], 0.7),
    )
    study.stage_endpoint2()
    assert len(evaluated) == 1 + 5 * 8  # the teacher, alone and seven methods, 5 seeds each
    result = json.loads((tmp_path / "endpoint_v6.json").read_text())
    row = result["rows"]["emkd_balanced_region_w2"]
    assert row["paired"][0] == pytest.approx(0.058) and row["gap_closed"] == pytest.approx(0.58)
    assert result["target_met"] is True
    assert "(selected)" in (tmp_path / "endpoint_v6.md").read_text()


def test_unlabeled_study_v7_rows_and_choice(tmp_path: Path, monkeypatch) -> None:
    """Protocol v7: the hard + soft rows distil on the pseudo row's data (data=nnunet, the 6
    cases + the scans) with their method; the choice is the row with unlabeled data whose
    smaller share of the validation gap is the largest."""
    module = _unlabeled_module()
    args = module.parse_args(["--dir", str(tmp_path), "--protocol", "v7"])
    study = module.PROTOCOLS[args.protocol](args)
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(study, "run", lambda command, *args: calls.append((command, *args)))
    combined = tmp_path / "combined" / "all-s1"
    monkeypatch.setattr(study, "combined", lambda seed, filtered: combined)
    monkeypatch.setattr(study, "soft_teacher", lambda seed: "teacher.ckpt=T")
    study.hard_soft("pseudo_soft", 2)
    cmd = calls[-1]
    assert cmd[0] == "distill" and "data=nnunet" in cmd and f"data.root={combined}" in cmd
    assert "distill=emkd_balanced_region" in cmd and "seed=2" in cmd and "teacher.ckpt=T" in cmd
    assert "data.unlabeled_root" not in " ".join(cmd)

    def summary(organ: float, tumor: float) -> dict:
        return {
            "organ": {"dice_per_case_nonempty": organ},
            "tumor": {"dice_per_case_nonempty": tumor},
        }

    values = {  # (organ, tumor) on validation; teacher - alone = (0.04, 0.2)
        "teacher": (0.95, 0.8),
        "alone": (0.91, 0.6),
        "soft": (0.915, 0.72),  # 12% / 60%
        "pseudo": (0.93, 0.66),  # 50% / 30%
        "filtered": (0.90, 0.7),  # -25% / 50%
        "pseudo_kd": (0.926, 0.68),  # 40% / 40%
        "pseudo_soft": (0.935, 0.67),  # 62% / 35%
    }
    val = {row: {s: summary(*v) for s in (1, 2, 3)} for row, v in values.items()}
    chosen, shares = study.choose(val)
    assert chosen == "pseudo_kd" and shares["pseudo"] == pytest.approx((0.5, 0.3))


def test_tumor_detectability_ranks_and_case_bound() -> None:
    """The matched-filter observer finds a clear 27-voxel blob first (rank 1) and ranks a
    1-voxel one at noise contrast behind many noise blobs; the case bound is the best Dice
    over which tumors to look for."""
    import numpy as np

    td = _script("tumor_detectability")
    rng = np.random.default_rng(0)
    image = 60.0 + 10.0 * rng.standard_normal((40, 40, 20))
    label = np.zeros(image.shape, np.uint8)
    label[4:36, 4:36, 2:18] = 1
    label[10:13, 10:13, 8:11] = 2  # 27 voxels, -40 HU: 4 noise sd
    image[10:13, 10:13, 8:11] -= 40.0
    label[28, 28, 12] = 2  # one voxel, -10 HU: 1 noise sd
    image[28, 28, 12] -= 10.0
    clear, faint = sorted(td.tumor_ranks(image, label), key=lambda r: -r["voxels"])
    assert (clear["voxels"], clear["rank"]) == (27, 1) and clear["contrast_hu"] < -30
    assert faint["voxels"] == 1 and faint["rank"] > 20
    assert td.case_bound([clear, faint]) == pytest.approx(2 * 27 / (28 + 27))
    assert td.case_bound([{"voxels": 5, "rank": 3}]) == pytest.approx(0.5)


def test_unlabeled_study_v8_endpoint_is_pseudo_kd_on_new_cases(tmp_path: Path) -> None:
    """Protocol v8 fixes pseudo_kd as its endpoint, scores it on cases 132-155 (its own split
    file and evaluation folder) and reads the target from both shares of the gap."""
    module = _unlabeled_module()
    args = module.parse_args(["--dir", str(tmp_path), "--protocol", "v8", "--seeds", "1,2,3,4,5"])
    study = module.PROTOCOLS[args.protocol](args)
    assert study.ENDPOINT == "pseudo_kd" and study.FRESH == (132, 156)
    assert study.fresh_split.name == "fresh8_split.json"
    assert study.SPLITS == {"fresh": "eval-fresh8"}

    def summary(organ: float, tumor: float) -> dict:
        return {
            "organ": {"dice_per_case_nonempty": organ},
            "tumor": {"dice_per_case_nonempty": tumor},
        }

    seeds = [1, 2, 3, 4, 5]
    scores = {
        "teacher": {s: summary(0.95, 0.8) for s in seeds},
        "alone": {s: summary(0.91, 0.6) for s in seeds},
        "pseudo_kd": {s: summary(0.93 + 0.001 * (s - 3), 0.69) for s in seeds},
    }
    organ, tumor = study.shares(scores, seeds)
    assert organ == pytest.approx(0.5) and tumor == pytest.approx(0.45)


def test_unlabeled_study_v9_length_rule_and_commands(tmp_path: Path, monkeypatch) -> None:
    """Protocol v9: the length is the shortest within 0.005 of ENet alone's best dev score;
    both rows at that length carry trainer.max_epochs (64 steps an epoch) into their own run
    folders, while 1,024 steps keeps v8's folders; the new cases are 180-203."""
    module = _unlabeled_module()
    args = module.parse_args(["--dir", str(tmp_path), "--protocol", "v9", "--jobs", "2"])
    study = module.PROTOCOLS[args.protocol](args)
    assert study.FRESH == (180, 204) and study.fresh_split.name == "fresh9_split.json"
    assert study.jobs == 2
    from unlabeled_v9 import choose_length

    dev = {1024: {"score": 0.70}, 2048: {"score": 0.712}, 4096: {"score": 0.716}}
    assert choose_length(dev, 0.005) == 2048
    assert choose_length({**dev, 8192: {"score": 0.73}}, 0.005) == 8192
    assert choose_length({1024: {"score": 0.7}, 2048: {"score": 0.69}}, 0.005) == 1024

    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(study, "run", lambda command, *a: calls.append((command, *a)))
    combined = tmp_path / "combined" / "all-s1"
    monkeypatch.setattr(study, "combined", lambda seed, filtered: combined)
    monkeypatch.setattr(study, "soft_teacher", lambda seed: "teacher.ckpt=T")
    study.alone_at(4096, 3)
    study.pseudo_kd_at(4096, 3)
    study.alone_at(1024, 2)
    alone, pkd, base = calls
    assert alone[0] == "train" and "trainer.max_epochs=64" in alone and "seed=3" in alone
    assert f"hydra.run.dir={tmp_path / 'runs' / 'alone-4096' / 's3'}" in alone
    assert pkd[0] == "distill" and "distill=kd" in pkd and f"data.root={combined}" in pkd
    assert "trainer.max_epochs=64" in pkd and "data=nnunet" in pkd
    assert f"hydra.run.dir={tmp_path / 'runs' / 'pseudo_kd-4096' / 's3'}" in pkd
    assert f"hydra.run.dir={tmp_path / 'runs' / 'alone' / 's2'}" in base
    assert "trainer.max_epochs=16" in base


def test_unlabeled_study_v9_main_pools_dev_cases_and_scores_new_ones(
    tmp_path: Path, monkeypatch
) -> None:
    """v9's main, every kdseg command stubbed: the pilot scores each length over the dev
    cases pooled (not a mean of the two folders' means), the rule's length sets the seeds, the
    endpoint rows and v8's rows are scored on the new cases only, and the report is written;
    a failing job stops the jobs not started yet."""
    import csv as csv_module

    module = _unlabeled_module()
    import unlabeled_v9

    args = module.parse_args(["--dir", str(tmp_path), "--protocol", "v9", "--jobs", "2"])
    study = module.PROTOCOLS[args.protocol](args)
    # dev Dice of ENet alone per length: (organ, tumor in folder 1, tumor in folder 2); folder
    # 1 holds one tumor case, folder 2 three. Pooled: 4096 wins; by folder means: 2048 would.
    dev = {1024: (0.90, 0.2, 0.2), 2048: (0.90, 0.9, 0.3), 4096: (0.90, 0.5, 0.55)}
    dev[8192] = (0.90, 0.5, 0.5)
    trained: list[tuple[str, int, int]] = []
    scored: list[tuple[str, str]] = []

    def fake_run(row: str, length: int, seed: int) -> Path:
        trained.append((row, length, seed))
        run = tmp_path / "runs" / study.row_dir(row, length) / f"s{seed}"
        run.mkdir(parents=True, exist_ok=True)
        return run

    def fake_score(run: Path, split_file: Path, out_name: str) -> dict:
        scored.append((run.parent.name, out_name))
        length = int(run.parent.name.split("-")[1]) if "-" in run.parent.name else 1024
        organ, first, second = dev.get(length, (0.9, 0.5, 0.5))
        (run / out_name).mkdir(parents=True, exist_ok=True)
        tumors = [first] if out_name == "eval-fresh" else [second] * 3
        with open(run / out_name / "per_case.csv", "w", newline="") as f:
            writer = csv_module.writer(f)
            writer.writerow(["case", "class", "gt_empty", "dice"])
            for i, dice in enumerate(tumors):
                writer.writerow([f"{out_name}-{i}", "organ", "False", organ])
                writer.writerow([f"{out_name}-{i}", "tumor", "False", dice])
            writer.writerow([f"{out_name}-empty", "tumor", "True", 1.0])
        teacher = run.parent.name == "teacher"
        tumor = 0.8 if teacher else 0.5 + 0.2 * run.parent.name.startswith("pseudo_kd")
        return {
            "organ": {"dice_per_case_nonempty": 0.95 if teacher else 0.91},
            "tumor": {"dice_per_case_nonempty": tumor},
        }

    monkeypatch.setattr(study, "check_v8_folder", lambda: None)
    monkeypatch.setattr(study, "data", lambda: None)
    monkeypatch.setattr(study, "teacher", lambda: fake_run("teacher", 1024, 1))
    monkeypatch.setattr(study, "combined", lambda seed, filtered: tmp_path / "combined")
    monkeypatch.setattr(study, "alone_at", lambda n, s: fake_run("alone", n, s))
    monkeypatch.setattr(study, "pseudo_kd_at", lambda n, s: fake_run("pseudo_kd", n, s))
    monkeypatch.setattr(study, "score", fake_score)
    monkeypatch.setattr(unlabeled_v9, "init_hash", lambda run: f"init-{run.name}")
    study.main()
    pilot = json.loads((tmp_path / "pilot-v9.json").read_text())
    assert pilot["length"] == 4096
    assert pilot["dev"]["2048"]["tumor"] == pytest.approx((0.9 + 3 * 0.3) / 4)
    assert sorted(t for t in trained if t[0] == "pseudo_kd") == [
        ("pseudo_kd", 4096, s) for s in range(1, 6)
    ]
    assert {("alone", 4096, s) for s in range(1, 6)} <= set(trained)
    endpoint = {row for row, out in scored if out == "eval-fresh9"}
    assert endpoint == {"teacher", "alone", "pseudo_kd", "alone-4096", "pseudo_kd-4096"}
    pilot_runs = {row for row, out in scored if out in ("eval-fresh", "eval-fresh8")}
    assert pilot_runs == {"alone", "alone-2048", "alone-4096", "alone-8192"}
    record = json.loads((tmp_path / "results-v9.json").read_text())
    assert record["seeds"] == [1, 2, 3, 4, 5] and record["shares"][1] == pytest.approx(2 / 3)

    ran: list[int] = []

    def job(i: int) -> None:
        if i == 0:
            raise RuntimeError("first job failed")
        time.sleep(0.2)  # the one job the worker may take before the cancel
        ran.append(i)

    study.jobs = 1
    with pytest.raises(RuntimeError, match="first job failed"):
        study.parallel([lambda i=i: job(i) for i in range(5)])
    assert len(ran) <= 1


def test_phantom_study_v7_patient_students(tmp_path: Path) -> None:
    """v7 (docs/study_v7/protocol.md): fresh test 3 is 156-179 (132-155 in no split); the
    pilot trains ENet alone only (seed 1, 4,096 and 2,048 steps) and keeps the longest length
    that leaves the teacher 0.15 ahead on dev 2, or none (then nothing more trains); the
    patient stage trains alone and emkd_balanced_region at that length for every seed;
    endpoint3 scores those and the 1,024-step rows on fresh test 3."""
    ps = _study_module()
    study = ps.Study(ps.parse_args(["--dir", str(tmp_path), "--protocol", "v7"]))
    calls: list[tuple[str, ...]] = []
    study.run = lambda command, *args: calls.append((command, *args))
    study.check_phantoms = lambda root: None
    study.stage_data()
    assert "n_cases=180" in calls[0]
    study.stage_data2()
    study.stage_data3()
    fresh3 = json.loads(study.fresh3_split_file.read_text())
    assert fresh3["test"] == sorted(f"volume-{i}" for i in range(156, 180))
    assert not {f"volume-{i}" for i in range(132, 156)} & {
        c for part in fresh3.values() for c in part
    }
    dev2 = json.loads(study.dev2_split_file.read_text())["test"]
    with pytest.raises(SystemExit, match="patient-pilot stage first"):
        study.stage_patient()

    evaluated: list[Path] = []
    where: set[tuple[str, ...]] = set()

    def evaluate_each(chosen: list[Path], out_dir: str, *overrides: str) -> None:
        evaluated.extend(chosen)
        where.add((out_dir, *overrides))

    study.evaluate_each = evaluate_each
    teacher = study.runs / "teachers" / "raunet-w0.5-s1"

    def pilot(alone: dict[int, float]) -> dict:
        calls.clear()
        study.gate_file.unlink(missing_ok=True)
        _fake_eval(teacher, ps.DEV2_DIR, dict.fromkeys(dev2, 0.8))
        for steps, value in alone.items():
            _fake_eval(study.alone_run(steps, 1), ps.DEV2_DIR, dict.fromkeys(dev2, value))
        study.stage_patient_pilot()
        assert [c[0] for c in calls] == ["train", "train"]  # no distillation before the rule
        assert "trainer.max_epochs=64" in calls[0] and "trainer.max_epochs=32" in calls[1]
        return json.loads(study.gate_file.read_text())

    assert pilot({4096: 0.66, 2048: 0.64})["steps"] == 2048
    assert where == {(ps.DEV2_DIR, f"data.split_file={study.dev2_split_file}", "split=test")}
    where.clear()
    assert pilot({4096: 0.62, 2048: 0.60})["steps"] == 4096
    calls.clear()
    study.stage_patient()
    train, distill = calls
    assert train[0] == "train" and "seed=1,2,3,4,5" in train and "trainer.max_epochs=64" in train
    assert distill[0] == "distill" and "distill=emkd_balanced_region" in distill
    assert "trainer.max_epochs=64" in distill and "study.teacher_seed=1" in distill
    assert pilot({4096: 0.70, 2048: 0.69})["steps"] is None
    calls.clear()
    study.stage_patient()
    study.stage_endpoint3()
    assert calls == []

    fresh3_dir = _script("study_protocols").FRESH3_DIR
    study.gate_file.write_text(json.dumps({"steps": 4096}))
    study.selection_file.write_text(json.dumps({"selected": "emkd_balanced"}))
    evaluated.clear()
    where.clear()
    _fake_eval(teacher, fresh3_dir, dict.fromkeys(fresh3["test"], 0.8))
    short = study.method_runs(["emkd_balanced_region"])
    for seed in study.seeds:
        for run, value in (
            (study.alone_run(4096, seed), 0.6),
            (study.distilled_run(4096, seed), 0.7 + 0.001 * seed),
            (short["alone"][seed], 0.55),
            (short["emkd_balanced_region"][seed], 0.6),
        ):
            _fake_eval(run, fresh3_dir, dict.fromkeys(fresh3["test"], value))
    study.stage_endpoint3()
    assert len(evaluated) == 1 + 4 * 5
    assert where == {(fresh3_dir, f"data.split_file={study.fresh3_split_file}", "split=test")}
    result = json.loads((tmp_path / "endpoint_v7.json").read_text())
    row = result["rows"]["emkd_balanced_region, 4096 steps (endpoint)"]
    assert row["paired"][0] == pytest.approx(0.103) and row["gap_closed"] == pytest.approx(0.515)
    assert result["rows"]["emkd_balanced_region, 1024 steps"]["gap_closed"] == pytest.approx(0.2)
    assert result["target_met"] is True


def test_demo_quotes_study_v7_confirmation(tmp_path: Path) -> None:
    """The demo's closing lines read study v7's confirmation file (when it exists): the
    equal-compute difference with its interval and ENet alone's lead-to-teacher at 4,096 steps."""
    demo = _script("demo")
    assert demo.compute_lines(tmp_path / "missing.json") == []
    result = {
        "n_cases": 24,
        "teacher": 0.8,
        "dice": {"alone 4096": {"1": 0.7, "2": 0.72}},
        "comparisons": {"equal compute: region 1024 - alone 2560": {"paired": [0.03, 0.01, 0.05]}},
    }
    path = tmp_path / "compute_v7.json"
    path.write_text(json.dumps(result))
    text = " ".join(demo.compute_lines(path))
    assert "+0.030 [+0.010, +0.050], above zero" in text and "2 paired seeds, 24 cases" in text
    assert "4,096 steps: 0.710; the teacher: 0.800" in text


def test_study_v7_budget_comparisons_are_row_minus_alone() -> None:
    """docs/study_v7/budget.py (and confirm.py): each comparison is the distilled row minus the
    alone row of the same seeds, and the gap is the teacher's lead over that alone row."""
    import sys

    sys.path.insert(0, str(ROOT / "docs" / "study_v7"))
    try:
        budget = _script_at(ROOT / "docs" / "study_v7" / "budget.py")
    finally:
        sys.path.remove(str(ROOT / "docs" / "study_v7"))
    dice = {
        "alone 2560": {1: 0.60, 2: 0.62, 3: 0.64},
        "alone 4096": {1: 0.70, 2: 0.70, 3: 0.70},
        "alone 1024": {1: 0.50, 2: 0.50, 3: 0.50},
        "emkd_balanced_region 1024": {1: 0.65, 2: 0.66, 3: 0.67},
        "emkd_balanced_region 4096": {1: 0.75, 2: 0.75, 3: 0.75},
    }
    out = budget.compare(dice, 0.80, budget.PAIRS)
    equal = out["equal compute: region 1024 - alone 2560"]
    assert equal["paired"][0] == pytest.approx(0.04) and equal["gap"] == pytest.approx(0.18)
    long = out["region 4096 - alone 4096"]
    assert long["paired"][0] == pytest.approx(0.05) and long["gap_closed"] == pytest.approx(0.5)


def test_two_study_scripts_on_one_folder_keep_each_others_timings(tmp_path: Path) -> None:
    """Each ``timed`` stage merges into ``timings.json`` as it is on disk: a second script on
    the same folder (started before the first wrote anything) no longer erases its entries."""
    ps = _study_module()
    first = ps.Study(ps.parse_args(["--dir", str(tmp_path)]))
    second = ps.Study(ps.parse_args(["--dir", str(tmp_path)]))
    first.timed("budget", 3, lambda: None)
    second.timed("confirm", 2, lambda: None)
    first.timed("budget", 1, lambda: None)
    on_disk = json.loads((tmp_path / "timings.json").read_text())
    assert on_disk["budget"]["runs"] == 4 and on_disk["confirm"]["runs"] == 2
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".timings.lock", "timings.json"], "no temporary file left behind"


def _recorded_main(tmp_path: Path, monkeypatch, argv: list[str]) -> list[dict]:
    """``phantom_study.main`` with every kdseg command replaced by a recorder (a teacher
    "trains" 0.4 s, a student sweep 0.1 s)."""
    ps = _study_module()
    calls: list[dict] = []

    def fake_run(self, command: str, *args: str) -> None:
        start = time.perf_counter()
        model = next(a.split("=")[1] for a in args if a.startswith("model="))
        time.sleep(0.4 if model == "raunet" else 0.1)
        jobs = [a for a in args if a.startswith("hydra.launcher.n_jobs=")]
        calls.append({"model": model, "start": start, "end": time.perf_counter(), "jobs": jobs})

    monkeypatch.setattr(ps.Study, "run", fake_run)
    ps.main(["--dir", str(tmp_path), "--stages", "teachers,students", *argv])
    return calls


def test_students_train_beside_a_lone_teacher(tmp_path: Path, monkeypatch) -> None:
    """v4's one teacher on two job slots: the students alone (one job) train while it does,
    not after it; each sweep runs one at a time, so two runs share the two cores."""
    calls = _recorded_main(tmp_path, monkeypatch, ["--protocol", "v4", "--jobs", "2"])
    teacher = next(c for c in calls if c["model"] == "raunet")
    students = [c for c in calls if c["model"] != "raunet"]
    assert [c["model"] for c in students] == ["enet", "mobilenetv2"]
    assert students[0]["start"] < teacher["end"], "the students waited for the teacher"
    assert all(c["jobs"] == [] for c in calls)  # one at a time each, two processes in all
    assert {"teachers", "students"} <= set(json.loads((tmp_path / "timings.json").read_text()))


@pytest.mark.parametrize(
    "argv", [["--protocol", "v4", "--jobs", "1"], ["--protocol", "v3", "--jobs", "2"]]
)
def test_teachers_then_students_when_no_slot_is_free(tmp_path: Path, monkeypatch, argv) -> None:
    """One job slot, or v3's five teachers filling both: the stages run one after the other,
    at ``--jobs`` a time."""
    calls = _recorded_main(tmp_path, monkeypatch, argv)
    last_teacher = max(c["end"] for c in calls if c["model"] == "raunet")
    assert all(c["start"] >= last_teacher for c in calls if c["model"] != "raunet")
    expected = [] if "1" in argv else ["hydra.launcher.n_jobs=2"]
    assert all(c["jobs"] == expected for c in calls)


def _copy_interrupted_at(name: str, monkeypatch) -> None:
    """``shutil.copytree`` stops (as a kill would) when it reaches a file called ``name``."""
    real = shutil.copytree

    def copy2(a, b, **kw):  # noqa: ANN001, ANN003
        if Path(a).name == name:
            raise KeyboardInterrupt
        return shutil.copy2(a, b, **kw)

    def copy(src, dst, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if args or "copy_function" in kwargs:  # copytree's own call for a subfolder
            return real(src, dst, *args, **kwargs)
        return real(src, dst, copy_function=copy2, **kwargs)

    monkeypatch.setattr(shutil, "copytree", copy)


def test_an_interrupted_teacher_copy_is_not_a_finished_teacher(tmp_path: Path, monkeypatch) -> None:
    """--teacher-from copied straight into runs/teachers/: a copy killed after summary.json
    and before best.ckpt was a finished teacher on the rerun (or an "unfinished run" refusal).
    The copy goes in under a temporary name, so the rerun copies it again."""
    ps = _study_module()
    t14 = _teacher_run(tmp_path / "T14", 128, "/somewhere/else/lits")
    argv = ["--dir", str(tmp_path / "study"), "--protocol", "v4", "--teacher-from", str(t14)]
    study = ps.Study(ps.parse_args(argv))
    calls: list[tuple[str, ...]] = []
    study.run = lambda command, *a: calls.append((command, *a))
    with monkeypatch.context() as m:
        _copy_interrupted_at("best.ckpt", m)
        with pytest.raises(KeyboardInterrupt):
            study.stage_teachers()
    copied = study.runs / "teachers" / "raunet-w0.5-s1"
    assert not copied.exists()
    study.stage_teachers()  # the rerun
    assert (copied / "checkpoints" / "best.ckpt").read_bytes() == b"not a real checkpoint"
    assert (copied / "summary.json").exists() and calls == []


def test_unlabeled_teacher_from_copy_survives_an_interruption(tmp_path: Path, monkeypatch) -> None:
    """The unlabeled study's --teacher-from copy: interrupted, it leaves no half teacher (the
    rerun copies it again); a folder that is no finished run is refused in one line."""
    module = _unlabeled_module()
    args = module.parse_args(["--dir", str(tmp_path / "u"), "--protocol", "v5"])
    study = module.PROTOCOLS["v5"](args)
    monkeypatch.setattr(study, "run", lambda *a: None)
    source = tmp_path / "teacher"
    source.mkdir()
    study.teacher_from = source
    with pytest.raises(SystemExit, match="no checkpoints/best.ckpt; a finished run"):
        study.teacher()
    import yaml
    from hydra import compose, initialize_config_dir

    from kdseg.cli import CONFIG_PATH, to_dict

    teacher_args = [*study.STAGE2, "logger=csv", *study.TEACHER_ARGS, "seed=1"]
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        config = to_dict(compose("train", overrides=[*teacher_args, f"data.root={study.labeled}"]))
    (source / "checkpoints").mkdir()
    (source / "checkpoints" / "best.ckpt").write_bytes(b"not a real checkpoint")
    (source / "config.yaml").write_text(yaml.safe_dump(config))
    (source / "summary.json").write_text("{}")
    with monkeypatch.context() as m:
        _copy_interrupted_at("best.ckpt", m)
        with pytest.raises(KeyboardInterrupt):
            study.teacher()
    out = study.runs / "teacher" / "s1"
    assert not out.exists()
    assert study.teacher() == out
    assert (out / "checkpoints" / "best.ckpt").read_bytes() == b"not a real checkpoint"
    assert (out / "copied_from.txt").read_text() == f"{source}\n"


def test_a_killed_phantom_draw_is_drawn_again(tmp_path: Path, monkeypatch) -> None:
    """kdseg-phantom writes phantom_truth.json first (the folder's marker) and a killed call
    leaves it with the cases drawn so far: the unlabeled and cascade studies took the file for
    a finished draw and went on with the missing cases. They call kdseg-phantom again (it
    keeps the drawn cases) until the truth names every case and none is pending."""
    protocols = _script("study_protocols")
    root = tmp_path / "data"
    root.mkdir()
    assert not protocols.phantoms_drawn(root, 3)
    entry = {"seed": 1, "config": "x"}
    (root / "phantom_truth.json").write_text(json.dumps({"volume-0": entry}))
    assert not protocols.phantoms_drawn(root, 3)
    truth = {f"volume-{i}": entry for i in range(3)}
    (root / "phantom_truth.json").write_text(json.dumps(truth))
    assert protocols.phantoms_drawn(root, 3)
    (root / "phantom_pending.json").write_text(json.dumps({"volume-2": entry}))
    assert not protocols.phantoms_drawn(root, 3)

    module = _unlabeled_module()
    study = module.StudyV2(module.parse_args(["--dir", str(tmp_path / "u"), "--protocol", "v2"]))
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(study, "run", lambda command, *args: calls.append((command, *args)))
    (root / "phantom_pending.json").unlink()
    (root / "phantom_truth.json").write_text(json.dumps({"volume-0": entry}))
    study.phantoms([(root, 3, 0)])
    assert [c[0] for c in calls] == ["phantom"] and f"root={root}" in calls[0]
    (root / "phantom_truth.json").write_text(json.dumps(truth))
    study.phantoms([(root, 3, 0)])
    assert len(calls) == 1  # every case drawn: not called again

    cascade = _script("cascade_study")
    args = dict(seeds=[1], stage2=["enet"], steps=16, width=0.25, size=64, stage2_from=None)
    study = cascade.Study(cascade.argparse.Namespace(dir=str(tmp_path / "c"), **args))
    calls.clear()
    study.kdseg = lambda command, *args: calls.append((command, *args))
    study.data.mkdir(parents=True)
    (study.data / "phantom_truth.json").write_text(json.dumps({"volume-0": entry}))
    study.stage_data()
    assert [c[0] for c in calls] == ["phantom"]


def test_a_cascade_pilot_does_not_replace_the_committed_table(tmp_path: Path, monkeypatch) -> None:
    """The cascade study's table goes to its folder; the committed docs/cascade_study.md is
    written only with --publish (a one-seed pilot used to replace the three-seed record)."""
    cascade = _script("cascade_study")
    docs = tmp_path / "repo"
    (docs / "docs").mkdir(parents=True)
    monkeypatch.setattr(cascade, "ROOT", docs)
    args = dict(seeds=[1], stage2=["enet"], steps=16, width=0.25, size=64, stage2_from=None)
    for publish in (False, True):
        study = cascade.Study(
            cascade.argparse.Namespace(dir=str(tmp_path / "c"), publish=publish, **args)
        )
        study.dir.mkdir(parents=True, exist_ok=True)
        study.stage_table()
        assert (study.dir / "cascade_study.md").exists()
        assert (docs / "docs" / "cascade_study.md").exists() == publish


def test_demo_reads_the_studys_selected_option(tmp_path: Path) -> None:
    """The demo's third student is the study's selected option (selection.json); a missing or
    malformed file, or one that selects the paper's method itself, adds no third student, and
    the committed selection is one the distill config group has."""
    demo = _script("demo")
    assert demo.selected_method(tmp_path / "missing.json") is None
    bad = tmp_path / "bad.json"
    for text in ("{not json", "[1, 2]", '{"other": 1}'):
        bad.write_text(text)
        assert demo.selected_method(bad) is None
    bad.write_text('{"selected": "kd_region"}')
    assert demo.selected_method(bad) == "kd_region"
    committed = demo.selected_method()
    assert committed is not None and (ROOT / "conf" / "distill" / f"{committed}.yaml").is_file()

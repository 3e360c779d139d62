"""What a command line may say: option types and ranges, keys a command reads, and one-shot
composition of a config without Hydra's app.

Called by :mod:`kdseg.cli.boundary` before a task runs (and by tasks for their own numeric
options, :func:`number`): a wrong option is one line naming it, before anything is built.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kdseg.errors import InputError

CONFIG_PATH = str(Path(__file__).resolve().parents[2] / "conf")
#: The one-shot commands' job logging (``hydra/job_logging: console``), under ``CONFIG_PATH``.
CONSOLE_LOGGING = "hydra/job_logging/console.yaml"


def check_option_types(
    cfg: DictConfig, config_name: str | None, choices: dict | None = None
) -> None:
    """Refuse an option whose value does not have the type of its default in ``conf/``.

    Defaults come from ``conf/<config_name>.yaml`` and from each chosen group file
    (``choices``: Hydra's ``runtime.choices``, e.g. ``trainer: default``), each merged over
    the files its own defaults list names (``data=kits19`` inherits ``lits.yaml``'s keys:
    :func:`_chain_defaults`). Hydra parses ``batch_size=abc`` as a string; this names the
    option before anything fails deep inside with ``invalid literal for int()``.
    """
    files = [("", f"{config_name}.yaml")] if config_name else []
    for group, choice in (choices or {}).items():
        if choice and not str(group).startswith("hydra") and "/" not in str(group):
            files.append((f"{group}.", f"{group}/{choice}.yaml"))
    for prefix, name in files:
        path = Path(CONFIG_PATH) / name
        if not path.is_file():
            continue
        package, defaults = _chain_defaults(path)
        if package is not None:  # the file says where it lands
            if package.startswith("_") and package != "_global_":
                continue
            prefix = "" if package == "_global_" else f"{package}."
        if defaults is not None:
            _walk_defaults(cfg, defaults, prefix)


@functools.lru_cache(maxsize=256)  # a config composed again (a sweep, --cfg) reads them once
def _file_defaults(path: Path, mtime_ns: int) -> tuple[str | None, dict | None, tuple[str, ...]]:
    """A config file's ``@package`` (None: not given), its values without ``defaults`` and
    ``hydra`` (None: not a mapping), and the order its defaults list merges in: the files of
    its own group it names (``lits``; ``/data/lits`` from ``conf/``) and ``_self_`` (last
    where not named, as Hydra). Group choices (``override /data: kits19``) are not files it
    inherits and are left out. Read only: the caller must not change them."""
    first = path.read_text().split("\n", 1)[0]
    package = first.split("@package", 1)[1].strip() if "@package" in first else None
    defaults = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not isinstance(defaults, dict):
        return package, None, ()
    entries = defaults.pop("defaults", None) or []
    defaults.pop("hydra", None)
    order = tuple(e for e in entries if isinstance(e, str))
    if "_self_" not in order:
        order += ("_self_",)
    return package, defaults, order


def _chain_defaults(path: Path, seen: tuple[Path, ...] = ()) -> tuple[str | None, dict | None]:
    """:func:`_file_defaults`' package and values of ``path``, merged in its defaults list's
    order over those of the files it inherits, theirs over their own parents' (``kits19``'s
    over ``lits``'): the defaults an option set by neither file itself still has a type from.
    A file missing or named twice in the chain is left out (Hydra reports it its own way)."""
    package, own, order = _file_defaults(path, path.stat().st_mtime_ns)
    if own is None:
        return package, None
    merged: dict = {}
    for entry in order:
        if entry == "_self_":
            values: dict | None = own
        else:
            base = Path(CONFIG_PATH) if entry.startswith("/") else path.parent
            parent = base / f"{entry.lstrip('/')}.yaml"
            if parent in seen or parent == path or not parent.is_file():
                continue
            values = _chain_defaults(parent, (*seen, path))[1]
        if values is not None:
            merged = _merged(merged, values)
    return package, merged


def _merged(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base``: mappings key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _walk_defaults(cfg: DictConfig, node: dict, prefix: str) -> None:
    for key, default in node.items():
        name = f"{prefix}{key}"
        if isinstance(default, dict):
            _walk_defaults(cfg, default, f"{name}.")
        elif isinstance(default, (bool, int, float)):
            _check_type(name, OmegaConf.select(cfg, name, throw_on_missing=False), default)


def _check_type(name: str, value: Any, default: bool | int | float) -> None:
    if value is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        want = "true or false"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        want = "a whole number"
    else:  # NaN is never a setting: refused with the type, not trained on (Inf may be one:
        # a threshold never met; where it is not, RANGES or the loss refuses it)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and math.isnan(value):
            raise InputError(None, f"{name}={value}: expected a number, not NaN")
        want = "a number"
    if not ok:
        raise InputError(None, f"{name}={value}: expected {want}")


#: options with a range, where any value of the right type is not a setting: (lowest, lowest
#: allowed itself, highest); checked wherever a config holds them (training and distillation)
RANGES: dict[str, tuple[float, bool, float | None]] = {
    "optim.lr": (0.0, False, None),
    "optim.weight_decay": (0.0, True, None),
    "optim.min_lr": (0.0, True, None),
    "loss.gamma": (0.0, True, None),
    "loss.dice_weight": (0.0, True, None),
    "loss.focal_weight": (0.0, True, None),
    "loss.blob_weight": (0.0, True, None),
    "data.target_fraction": (0.0, True, 1.0),
    # once: a ValueError deep in the network, exit 1; 64 is kdseg.models.registry.MAX_WIDTH
    # (not imported: this module stays free of torch)
    "model.width": (0.0, False, 64.0),
    "student.width": (0.0, False, 64.0),
}


#: what ``optim`` holds (Adam and its cosine schedule read these alone)
OPTIM_KEYS = ("lr", "weight_decay", "min_lr")


def check_option_ranges(cfg: DictConfig) -> None:
    """Refuse a value of :data:`RANGES` outside its range (or not a finite number; null is
    allowed where the default is null): one line before anything is built, instead of an
    optimizer's or a sampler's exception as an internal error, or a run that trains on NaN.
    Also an ``optim`` key no optimizer reads (``+optim.weight_decy=...``: a typo was ignored)."""
    optim = OmegaConf.select(cfg, "optim", default=None, throw_on_missing=False)
    unknown = sorted(set(optim.keys()) - set(OPTIM_KEYS)) if isinstance(optim, DictConfig) else []
    if unknown:
        raise InputError(
            None, f"optim.{unknown[0]}: not an option of the optimizer; its options: {OPTIM_KEYS}"
        )
    for key, (low, inclusive, high) in RANGES.items():
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(None, f"{key}={value}: expected a finite number")
        ok = math.isfinite(value) and (value >= low if inclusive else value > low)
        if not ok or (high is not None and value > high):
            bound = f">= {low}" if inclusive else f"> {low}"
            span = f"{bound} and <= {high}" if high is not None else bound
            raise InputError(None, f"{key}={value}: must be a finite number {span}")


def number(
    cfg: DictConfig,
    key: str,
    kind: type = int,
    minimum: float | None = None,
    maximum: float | None = None,
) -> int | float | None:
    """``cfg[key]`` as ``kind`` (``None`` stays ``None``), finite and within ``minimum`` and
    ``maximum`` where given; an :class:`InputError` naming it."""
    value = OmegaConf.select(cfg, key)
    if value is None:
        return None
    want = "a whole number" if kind is int else "a number"
    if isinstance(value, bool) or (kind is int and isinstance(value, float)):
        raise InputError(None, f"{key}={value}: expected {want}")
    try:
        result = kind(value)
    except (TypeError, ValueError):
        raise InputError(None, f"{key}={value}: expected {want}") from None
    if not math.isfinite(result):
        raise InputError(None, f"{key}={value}: expected a finite number")
    if minimum is not None and result < minimum:
        raise InputError(None, f"{key}={value}: must be at least {minimum}")
    if maximum is not None and result > maximum:
        raise InputError(None, f"{key}={value}: must be at most {maximum}")
    return result


#: the commands whose configs take new keys (``+distill.mix=cutmix``,
#: ``+trainer.limit_val_batches=1``); every other command reads only the keys of its file
OPEN_CONFIGS = ("train", "distill")


#: the parts of a training config that take new keys, each checked where it is read:
#: Lightning's Trainer arguments (``kdseg.lit.train``) and a method's criterion options
#: (``kdseg.distill.criterion``); ``+data.batchsize=4`` or ``+loss.focl=1`` was ignored
OPEN_SECTIONS = ("trainer", "distill")


#: config groups that hold one network's constructor options: a new key under one is checked
#: against the chosen file alone (``model=raunet +model.base=32``: ``base`` is unetpp's)
MODEL_GROUPS = ("model", "student")


def check_no_new_keys(
    config_name: str | None, overrides: list[str], choices: dict | None = None
) -> None:
    """Refuse ``+key=value`` for a command that would never read the key (a typo of an option
    would otherwise be ignored without a word). A training command takes new keys under
    :data:`OPEN_SECTIONS` only; elsewhere a key that no config file of it holds is a typo.
    ``choices`` (Hydra's ``runtime.choices``): a key under :data:`MODEL_GROUPS` must be an
    option of the chosen network's file, not of any network's."""
    for override in overrides:
        if override.startswith("+") and "=" in override:
            key = override.lstrip("+").split("=", 1)[0]
            model = _chosen_model(key, choices)
            if config_name in OPEN_CONFIGS and (
                key.split(".")[0] in (*OPEN_SECTIONS, "hydra", "experiment")
                or "/" in key
                or "@" in key
                or key in _option_names(config_name, model)
            ):
                continue
            close = _closest_option(key, config_name, model) if config_name else None
            hint = f" (did you mean {close}=?)" if close else ""
            where = f"{model[0]}={model[1]}" if model else f"conf/{config_name}.yaml"
            listed = f"conf/{model[0]}/{model[1]}.yaml" if model else "--help"
            raise InputError(
                None,
                f"{override}: {where} has no option {key!r} to add{hint}; "
                f"its options are listed by {listed}",
            )


def _chosen_model(key: str, choices: dict | None) -> tuple[str, str] | None:
    """``(group, choice)`` when ``key`` lies under a :data:`MODEL_GROUPS` group whose chosen
    file is known and stands alone (no defaults list of its own); else None."""
    group = key.split(".")[0]
    choice = (choices or {}).get(group)
    if group not in MODEL_GROUPS or not isinstance(choice, str):
        return None
    path = Path(CONFIG_PATH) / group / f"{choice}.yaml"
    try:
        own = OmegaConf.load(path)
    except Exception:  # noqa: BLE001  (Hydra read it; unreadable here: the broad check)
        return None
    return None if "defaults" in own else (group, choice)


@functools.cache  # the config files do not change while a command runs
def _option_names(config_name: str, model: tuple[str, str] | None = None) -> tuple[str, ...]:
    """Dotted option names a command's config may hold, for suggestions: the keys of
    ``conf/<config_name>.yaml`` and of every file of the config groups its defaults list
    names (``data``, ``model``, ...; not ``experiment``, not ``hydra``); ``model``, a
    ``(group, choice)``: that group's keys from the chosen file only."""
    root = Path(CONFIG_PATH)
    names: set[str] = set()

    def load(path: Path) -> Any:
        try:
            return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        except Exception:  # noqa: BLE001  (a suggestion is optional)
            return None

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key not in ("defaults", "hydra"):
                    names.add(f"{prefix}{key}")
                    walk(value, f"{prefix}{key}.")

    own = load(root / f"{config_name}.yaml")
    walk(own, "")
    groups = [g for g, _ in config_groups(config_name, root) if not g.startswith("experiment")]
    for group in groups:
        chosen = [root / group / f"{model[1]}.yaml"] if model and model[0] == group else None
        for path in chosen or sorted((root / group).glob("*.yaml")):
            walk(load(path), f"{group}.")
    return tuple(sorted(names))


def _closest_option(key: str, config_name: str, model: tuple[str, str] | None = None) -> str | None:
    """The option of ``config_name`` that ``key`` most likely misspells, if any (never ``key``
    itself: an option of another network than the chosen one)."""
    import difflib

    names = [name for name in _option_names(config_name, model) if name != key]
    head, dot, rest = key.rpartition(".")
    siblings = [name[len(head) + 1 :] for name in names if dot and name.startswith(f"{head}.")]
    close = difflib.get_close_matches(rest, siblings, n=1, cutoff=0.75) if siblings else []
    if close:  # compared without the shared part (model.base is not model.name)
        return f"{head}.{close[0]}"
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    return close[0] if close and not (siblings and close[0].startswith(f"{head}.")) else None


def unknown_option(message: str, config_name: str) -> InputError | None:
    """Hydra's refusal of ``key=value`` for a key the config lacks ("Could not override 'key'.
    To append to your config use +key=value"), told as kdseg's commands take it: a command
    that reads only its own keys refuses ``+key=`` as well (:func:`check_no_new_keys`), so
    the advice would only lead to a second refusal; a close option name is offered instead,
    or, for an option of another network (``model=raunet model.base=32``), the networks that
    have it. None when ``message`` is not that refusal."""
    import re

    match = re.match(
        r"Could not override '([^']+)'\. To append to your config use \+(.+)$", message
    )
    if match is None:
        return None
    key, override = match.groups()
    group, _, option = key.partition(".")
    if config_name in OPEN_CONFIGS and group in MODEL_GROUPS and option:
        holders = [
            path.stem
            for path in sorted((Path(CONFIG_PATH) / group).glob("*.yaml"))
            if f"{group}.{option}" in _option_names(config_name, (group, path.stem))
        ]
        if holders:
            which = ", ".join(f"{group}={name}" for name in holders)
            return InputError(
                None,
                f"{override}: the chosen {group} has no option {option!r} (only {which} has it)",
            )
    close = _closest_option(key, config_name)
    hint = f"did you mean {close}=?" if close else "--help lists the options"
    if config_name in OPEN_CONFIGS and key.split(".")[0] in OPEN_SECTIONS:
        hint += f"; +{override} adds it as a new key"
    return InputError(None, f"{override}: conf/{config_name}.yaml has no option {key!r} ({hint})")


def unknown_choice(message: str) -> InputError | None:
    """Hydra's refusal of a config group choice that does not exist (``model=enett``: "Could
    not find 'model/enett'", then the available options and Hydra's config search path, all
    on one line once joined) as one short line with the closest choice. None when
    ``message`` is not that refusal."""
    import difflib
    import re

    match = re.search(r"Could not find '(.+)/([^'/]+)'", message)
    if match is None:
        return None
    group, name = match.groups()
    listed = message.split("Config search path")[0].partition("Available options in")[2]
    options = [line.strip() for line in listed.splitlines()[1:] if line.strip()]
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    hint = f"did you mean {group}={close[0]}? " if close else ""
    choices = f"{hint}choices: {', '.join(options)}" if options else "no choices"
    return InputError(None, f"{group}={name}: no {group} config of that name ({choices})")


def plain_overrides(argv: list[str]) -> bool:
    """Whether ``argv`` is only ``key=value`` overrides of the task config: no flags
    (``--cfg``, ``-m``, ``--help``), no ``+``/``~`` edits, nothing under ``hydra``."""
    return all(
        "=" in arg and not arg.startswith(("-", "+", "~", "hydra.", "hydra/", "hydra=", "@"))
        for arg in argv
    )


def set_on_command_line(key: str) -> bool:
    """Whether ``key`` was given on the command line (``key=``, ``+key=``, ``++key=``), as
    Hydra records the task's overrides: set by the user, not by a config group or an
    ``experiment=`` file. False outside a Hydra app (a config composed by :func:`compose_once`
    is not asked)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    given = (str(o).partition("=")[0].lstrip("+") for o in HydraConfig.get().overrides.task)
    return key in given


def quote_paths(
    argv: list[str], keys: tuple[str, ...], nullable: tuple[str, ...] = ()
) -> list[str]:
    """``argv`` with each ``key=value`` of ``keys`` (options that name files) quoted for Hydra's
    grammar where it would not read the value as that one path: a file name with parentheses,
    brackets, ``=``, an apostrophe or a letter outside ASCII (``CT scan (1).nii.gz``,
    ``Bäcker.nii``) is a grammar error, a comma a sweep, and ``1e3``, ``123``, ``true`` or
    ``null`` a number, a bool or None (a TypeError deep inside), unless quoted; ``null`` stays
    null for the keys of ``nullable`` (``ckpt=null``: no checkpoint). A list (``ckpt=[a,b]``),
    a quoted value and anything under ``-m`` / ``--multirun`` / ``hydra.mode=MULTIRUN`` stay
    as given.
    """
    named = any(arg.partition("=")[0] in keys for arg in argv)
    if not named or any(arg in ("-m", "--multirun") or _multirun(arg) for arg in argv):
        return argv  # `--help`: no parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    quoted = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in keys and value and value[0] not in "['\"" and not value.endswith("\\"):
            try:
                override = parser.parse_override(arg)
                sweep = override.is_sweep_override()
                read = None if sweep else override.value()
                plain = not sweep and (isinstance(read, str) or (read is None and key in nullable))
            except Exception:  # noqa: BLE001  (Hydra's grammar error)
                plain = False
            if not plain:
                arg = f"{key}='" + value.replace("'", "\\'") + "'"
        quoted.append(arg)
    return quoted


def _multirun(arg: str) -> bool:
    """Whether ``arg`` sets ``hydra.mode`` to MULTIRUN, which makes a comma a sweep as ``-m``."""
    key, _, value = arg.partition("=")
    return key.lstrip("+") == "hydra.mode" and value.removeprefix("RunMode.") == "MULTIRUN"


def _has_key(cfg: DictConfig, key: str) -> bool:
    """Whether dotted ``key`` names an existing entry of ``cfg`` (a ``???`` value counts)."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():  # `in`: False for ???
            return False
        node = node._get_node(part)
    return True


def _flat_config(config_name: str, overrides: list[str]) -> DictConfig | None:
    """``conf/<config_name>.yaml`` with ``overrides`` without Hydra's composition, when that is
    exactly what composing gives; else None (the caller composes with Hydra).

    A config whose defaults list is only ``_self_`` and ``override hydra/...`` lines composes
    to its own file without its ``defaults`` and ``hydra`` keys. The overrides are parsed by
    Hydra's own grammar (``OverridesParser``: the same values, lists, quoting, ``null``) and
    merged as Hydra merges them; only plain changes of existing keys take this path.
    Composing costs a quarter of a second, a tenth of a one-shot prediction (2 cores).
    """
    path = Path(CONFIG_PATH) / f"{config_name}.yaml"
    try:
        cfg = OmegaConf.load(path)
    except Exception:  # noqa: BLE001  (unreadable or bad YAML: Hydra reports it its own way)
        return None
    defaults = cfg.get("defaults", [])
    for entry in defaults:
        plain = entry == "_self_"
        hydra_only = isinstance(entry, DictConfig) and all(
            str(k).startswith("override hydra/") for k in entry
        )
        if not (plain or hydra_only):
            return None
    for key in ("defaults", "hydra"):
        cfg.pop(key, None)
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001  (Hydra's compose reports a bad override its own way)
        return None
    OmegaConf.set_struct(cfg, True)  # as Hydra: a merged dict cannot add keys either
    for override in parsed:
        key = override.key_or_group
        if (
            override.type != OverrideType.CHANGE
            or override.package is not None
            or override.is_sweep_override()
            or not _has_key(cfg, key)
        ):
            return None
        OmegaConf.update(cfg, key, override.value(), merge=True)
    return cfg


def _compose(config_name: str, overrides: list[str]) -> tuple[DictConfig, dict, list[str]]:
    """The task's config (without ``hydra``), Hydra's ``runtime.choices`` and the overrides as
    Hydra recorded them: by :func:`_flat_config` where that is what composing gives (no
    choices; no ``+key``, so no overrides to check), else by Hydra's Compose API."""
    cfg = _flat_config(config_name, overrides)
    if cfg is not None:
        return cfg, {}, []
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_PATH, job_name=config_name):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    given = [str(o) for o in cfg.hydra.overrides.task]
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices, given


def compose_once(config_name: str, overrides: list[str]) -> DictConfig:
    """``conf/<config_name>.yaml`` with ``overrides``, through Hydra's Compose API.

    The config Hydra's app would pass (same files, same override grammar), composed once: the
    app composes it twice (once just to read ``hydra.mode``) and then sets up a job, half a
    second on two cores, more than a one-shot tool's own start-up. The option types are checked
    as in :func:`guarded`, and Python logging gets the ``console`` job logging of the configs
    (:data:`CONSOLE_LOGGING`: INFO, the bare message on stdout, warnings prefixed on stderr).
    """
    import logging.config

    import yaml

    cfg, choices, _ = _compose(config_name, overrides)
    logging.config.dictConfig(yaml.safe_load((Path(CONFIG_PATH) / CONSOLE_LOGGING).read_text()))
    check_option_types(cfg, config_name, choices)
    return cfg


def check_overrides(config_name: str, overrides: list[str]) -> DictConfig:
    """``conf/<config_name>.yaml`` composed with ``overrides`` (the command's files and
    grammar) after the checks the command's boundary runs before its task
    (:func:`kdseg.cli.boundary.guarded`): new keys it would not read, option types and ranges;
    Hydra's refusal of an unknown option or choice becomes the command's one line
    (:func:`unknown_option`, :func:`unknown_choice`). Every refusal is an :class:`InputError`.
    Run by ``--cfg job`` before Hydra prints the config, and by ``tests/test_docs_commands.py``.
    Returns the task's config, without ``hydra``."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    try:
        cfg, choices, given = _compose(config_name, overrides)
    except MissingConfigException as exc:  # model=enett
        refusal = unknown_choice(str(exc))
        if refusal is None:
            raise
        raise refusal from None
    except ConfigCompositionException as exc:  # key=value for a key the config lacks
        refusal = unknown_option(" ".join(str(exc).split()), config_name)
        if refusal is None:
            raise
        raise refusal from None
    check_no_new_keys(config_name, given, choices)
    check_option_types(cfg, config_name, choices)
    check_option_ranges(cfg)
    return cfg


#: The header-comment words that mark a config as going beyond the EMKD paper
BEYOND_MARKER = "BEYOND THE PAPER"


def config_groups(config_name: str, root: str | Path = CONFIG_PATH) -> list[tuple[str, Any]]:
    """The config groups ``conf/<config_name>.yaml``'s defaults list names, in its order, each
    with its default choice (None: ``group: null``, none chosen); ``hydra/...``, ``_self_``
    and ``override`` lines left out."""
    import yaml

    own = yaml.safe_load((Path(root) / f"{config_name}.yaml").read_text())
    defaults = (own.get("defaults") or []) if isinstance(own, dict) else []
    return [
        (str(group), choice)
        for entry in defaults
        if isinstance(entry, dict)
        for group, choice in entry.items()
        if not str(group).startswith(("override", "hydra", "/hydra"))
    ]


def beyond_the_paper(path: Path) -> bool:
    """Whether a config file's header comment (its leading ``#`` lines) says
    :data:`BEYOND_MARKER`: a kdseg addition, not the EMKD paper's method."""
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    return BEYOND_MARKER in " ".join(header)


def groups_help(config_name: str, width: int = 80, root: str | Path = CONFIG_PATH) -> str:
    """The ``--help`` section listing each config group of ``conf/<config_name>.yaml`` with
    the choices its folder holds now (``conf/<group>/*.yaml``), the default marked (``null``
    first for a group none of whose choices is the default; a default named ``default`` is
    not marked again) and a choice whose header says
    :data:`BEYOND_MARKER` starred; wrapped to ``width`` columns. Empty for a config with no
    groups."""
    import textwrap

    groups = config_groups(config_name, root)
    if not groups:
        return ""
    rows, starred = [], False
    for group, default in groups:
        items = [] if default is not None else ["null\xa0(default)"]  # (experiment=null)
        for path in sorted((Path(root) / group).glob("*.yaml")):
            beyond = beyond_the_paper(path)
            starred |= beyond
            mark = "*" if beyond else ""
            # a choice named "default" says so itself (`paths: default`, not "default (default)")
            marked = path.stem == default and default != "default"
            default_mark = "\xa0(default)" if marked else ""  # (no break before)
            items.append(f"{path.stem}{mark}{default_mark}")
        rows.append((group, ", ".join(items)))
    legend = "; *: beyond the paper" if starred else ""
    lines = [f"config groups (choose with group=choice{legend}):"]
    indent = 2 + max(len(group) for group, _ in rows) + 2
    for group, text in rows:
        head = f"  {group}:".ljust(indent)
        lines += textwrap.wrap(
            text,
            max(width, indent + 20),
            initial_indent=head,
            subsequent_indent=" " * indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
    return "\n".join(lines).replace("\xa0", " ")

"""``kdseg-bench``: cost, CPU time per volume, memory and Dice of models and artefacts."""

from __future__ import annotations

from omegaconf import DictConfig

from kdseg.cli import command, to_dict
from kdseg.deploy.bench import BenchConfig, check_bench_replaceable, run_bench
from kdseg.errors import InputError
from kdseg.guards import check_output


@command("kdseg-bench", "bench")
def main(cfg: DictConfig) -> None:
    plain = to_dict(cfg)
    if not plain.pop("dice", True):
        plain["data"] = None
    bench = BenchConfig.from_dict(plain)
    inputs = [(plain.get("data") or {}).get("root"), plain.get("entries_file")]
    for entry in bench.entries:  # never into a dataset, a run folder or an artefact's folder
        for value in (entry.ckpt, entry.artifact):
            inputs += list(value) if isinstance(value, (list, tuple)) else [value]
    check_output(cfg.output_dir, [p for p in inputs if p], folder=True, what="output_dir")
    # somebody's bench.md is not replaced by a rerun's (unless overwrite); a folder never is
    check_bench_replaceable(cfg.output_dir, bench.name, overwrite=bool(cfg.overwrite))
    results = run_bench(bench)
    print(results["markdown"])
    print(f"written: {cfg.output_dir}/{cfg.name}.md, .png, .json")
    failed = [r for r in results["rows"] if not r.get("ok", True)]
    if failed:  # the table keeps the failed rows; the exit code says the run was not clean
        first = failed[0]
        raise InputError(
            None,
            f"{len(failed)} of {len(results['rows'])} entries failed; "
            f"{first.get('name')}: {first.get('error')}",
        )


if __name__ == "__main__":
    main()

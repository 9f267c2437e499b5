"""`vsr1 toy`: the whole VideoSearch-R1 process on a small workspace, end to end, one command.

    vsr1 toy                                   # CPU: the synthetic world at toy sizes (configs/toy_cpu.yaml)
    vsr1 toy --profile gpu                     # one GPU: larger world, `small` engine and policy (toy_gpu.yaml)
    vsr1 toy workspace=/tmp/toy train.steps=4  # any dotted override applies to every step
    vsr1 toy --from-step sft                   # redo from a step (earlier steps' outputs are kept)
    vsr1 toy --dataset activitynet --video-source /data/anet/videos [--annotations /data/anet/fig]

Steps (each one is a plain `vsr1` subcommand, printed before it runs; each resumes or skips finished work,
so rerunning the command after a kill continues where it stopped):
1. world      vsr1 synth                                  the benchmark world (real mp4s, FIG JSONL)
2. engine     vsr1 engine train                           the synthetic search engine (its own world)
3. index      vsr1 index synth --split train|test|val     FAISS indexes + hard negatives
4. channel    vsr1 engine channel synth                   the soft-token ceiling of this engine (SQR's bound)
5. base       vsr1 train base                             the base policy = the zero-shot (ZS) baseline
6. sft-data   vsr1 build sft synth                        top-1 pairs, traces from the timelines, negatives
7. sft        vsr1 train sft synth --checkpoint BASE      token CE + InfoNCE through the frozen engine
8. infer      vsr1 infer synth ...                        engine alone, ZS, SFT (SQR), SFT without SQR on test;
                                                          SFT also on val (toy-sft-val: where choices are read);
                                                          SFT with and without SQR under the truth as verifier
                                                          (*-oracle: refinement apart from the verdicts)
9. grpo       vsr1 train grpo synth --checkpoint SFT      multi-turn GRPO with the live engine, then its infer
                                                          (test, val: toy-grpo-val, and toy-grpo-oracle)
   (the runs that do not need GRPO are evaluated first: a run stopped during GRPO still has them)
10. report    vsr1 report RUN ... --out <workspace>/runs/toy-report   one table, result.json, plots

toy.overlap (the gpu profile sets it): steps that share no outputs run side by side, each lane in child `vsr1`
processes logged to <workspace>/toy-beside-<step>.log: the indexes and the channel check beside the base, the
evaluations before GRPO beside GRPO; a lane is joined (its failure stops the toy, named) before the next step.

Run names are fixed (`toy-*`), so the runs land in <workspace>/runs/toy-*/ (training runs toy-base,
toy-sft-train, toy-grpo-train; evaluations EVAL_RUNS). The profiles are plain config files
(videosearch_r1/configs/toy_{cpu,gpu}.yaml); `--config FILE` replaces the profile.

A real dataset (`--dataset D`, D = activitynet | charades | didemo): the same process on toy.videos_per_split
videos per split of it, as a dataset of its own named toy-<D> (runs toy-<D>-*, report runs/toy-<D>-report):
1. data       data/toyset.py: the videos of each split tried in a fixed order until enough exist and decode
              (missing / corrupt ones are counted skips, named), laid out in the raw layout under
              <workspace>/data/toy-<D>/raw (symlinks + the chosen videos' FIG rows); the config of every
              later step is <workspace>/data/toy-<D>/toy.yaml (the profile + the toy-<D> dataset entry)
2. engine     vsr1 engine train                           the tiny engine trained on toy-<D>'s train split
3. build      vsr1 build toy-<D>                          splits, frame store, index, hard negatives, SFT rows
4. channel    vsr1 engine channel toy-<D>
5. base       vsr1 train base base.eval_videos=0          as above (synthetic generic tasks, engine-initialised)
6. sft, 7. infer, 8. grpo, 9. report                       as above, on toy-<D>'s train / test splits
The engine: a synthetic-world engine has never seen real footage, so the honest small engine is one trained
on the dataset's own train captions (engine/train.py trains on any FIG dataset's train split); with ~10 train
videos it is a machinery check, not a search engine. It is retrained only when its training key changes.
`engine.model=PATH_OR_ID` (e.g. Qwen/Qwen3-VL-Embedding-2B on a GPU) uses that engine as is instead. The
base policy is the synthetic-world base pretraining started from that engine (its starting point is generic
video tasks, as a real run starts from an instruction-tuned VLM). SFT traces are templates (sft.teacher=none)
unless sft.teacher is set. Frames are sampled as toy.video (the cpu profile: small), else the dataset's own.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from videosearch_r1 import cli
from videosearch_r1.utils import command_parser, config_from_args, parse_command

PROFILES = ("cpu", "gpu")
STEPS = ("world", "engine", "index", "channel", "base", "sft-data", "sft", "infer", "grpo", "report")
REAL_STEPS = ("data", "engine", "build", "channel", "base", "sft", "infer", "grpo", "report")  # --dataset D
# the inference runs compared in the report: (run name, policy run dir under runs/ or None, extra overrides)
EVAL_RUNS = (
    ("toy-engine", None, ["agent.method=engine"]),
    ("toy-zs", "toy-base/policy", ["agent.method=sqr"]),
    ("toy-sft-nosqr", "toy-sft-train/final", ["agent.method=zeroshot"]),
    ("toy-sft", "toy-sft-train/final", ["agent.method=sqr"]),
    # *-oracle: the truth as verifier (agent.oracle_verifier), so what refinement finds is read apart from the
    # policy's verdicts: SQR's refined query vs the original query's next candidate (zeroshot)
    ("toy-sft-nosqr-oracle", "toy-sft-train/final", ["agent.method=zeroshot", "agent.oracle_verifier=true"]),
    ("toy-sft-oracle", "toy-sft-train/final", ["agent.method=sqr", "agent.oracle_verifier=true"]),
    ("toy-grpo", "toy-grpo-train/final", ["agent.method=sqr"]),
    ("toy-grpo-oracle", "toy-grpo-train/final", ["agent.method=sqr", "agent.oracle_verifier=true"]),
)  # training runs are named apart from these (a trainer rewrites its run's config.yaml, which an evaluation
#    in the same directory would then refuse to resume under)


# EVAL_RUNS also run on the val split (synthetic toy; as <name>-val): where recipe choices are read, test is
# reported once
VAL_OF = ("toy-sft", "toy-grpo")


def profile_config(profile: str) -> Path:
    """The shipped config file of a profile ("cpu" | "gpu")."""
    if profile not in PROFILES:
        raise ValueError(f"unknown toy profile {profile!r}; known: {PROFILES}")
    return Path(__file__).parent / "configs" / f"toy_{profile}.yaml"


def plan(runs: Path, common: list[str], grpo_steps: int, grpo_warmup: int = 0) -> list[tuple[str, str, list[str]]]:
    """(step, title, vsr1 argv) in order; `common` (--config + overrides) goes to every command, and the
    toy's own run names come last so they win."""
    steps = [
        ("world", "build the benchmark world", ["synth", *common]),
        ("engine", "train the search engine", ["engine", "train", *common]),
        ("index", "index the train corpus", ["index", "synth", "--split", "train", *common]),
        ("index", "index the test corpus", ["index", "synth", "--split", "test", *common]),
        ("index", "index the val corpus", ["index", "synth", "--split", "val", *common]),
        ("channel", "soft-token ceiling of the engine", ["engine", "channel", "synth", *common,
                                                          "run_name=toy-channel"]),
        ("base", "pretrain the base policy (ZS)", ["train", "base", *common, "run_name=toy-base"]),
        ("sft-data", "build the SFT rows", ["build", "sft", "synth", *common]),
        ("sft", "SFT (token CE + InfoNCE)", ["train", "sft", "synth", "--checkpoint",
                                             str(runs / "toy-base" / "policy"), *common, "run_name=toy-sft-train"]),
    ]
    steps += tail("synth", "toy", runs, common, grpo_steps, grpo_warmup)
    for i in [i for i, (_, title, _) in enumerate(steps) if title in {f"evaluate {n}" for n in VAL_OF}][::-1]:
        step, title, argv = steps[i]  # right after its test evaluation: the same command on val, its own run
        val = [("val" if a == "test" and argv[j - 1] == "--split" else a) for j, a in enumerate(argv)]
        steps.insert(i + 1, (step, f"{title} on val", val[:-1] + [f"{argv[-1]}-val"]))
    return steps


def tail(dataset: str, prefix: str, runs: Path, common: list[str], grpo_steps: int,
         grpo_warmup: int) -> list[tuple[str, str, list[str]]]:
    """The end both plans share: the evaluations that need no GRPO, GRPO from SFT, its evaluation, the report;
    run names EVAL_RUNS' with "toy" replaced by `prefix` (toy-activitynet-sft)."""
    def run(name: str) -> str:
        return prefix + name[len("toy"):]

    grpo = ("grpo", "GRPO from SFT", ["train", "grpo", dataset, "--checkpoint",
                                      str(runs / run("toy-sft-train") / "final"), *common, f"train.steps={grpo_steps}",
                                      f"train.warmup={grpo_warmup}", f"run_name={run('toy-grpo-train')}"])
    steps = []
    for name, policy, extra in EVAL_RUNS:
        after_grpo = bool(policy) and policy.startswith("toy-grpo-train")
        if after_grpo and grpo not in steps:
            steps.append(grpo)
        ckpt = ["--checkpoint", str(runs / run(policy))] if policy else []
        steps.append(("grpo" if after_grpo else "infer", f"evaluate {run(name)}",
                      ["infer", dataset, "--split", "test", *ckpt, *common, *extra, f"run_name={run(name)}"]))
    preds = [str(runs / run(name) / "predictions.jsonl") for name, _, _ in EVAL_RUNS]
    steps.append(("report", "report", ["report", *preds, "--out", str(runs / run("toy-report")), *common]))
    return steps


def dataset_plan(name: str, runs: Path, common: list[str], grpo_steps: int, grpo_warmup: int = 0,
                 train_engine: bool = True) -> list[tuple[str, str, list[str]]]:
    """The real-dataset toy's `vsr1` steps after its data step, on the toy copy `name` (toy-<D>): REAL_STEPS
    order, run names <name>-*; the engine step only when `train_engine`."""
    steps = [("engine", f"train the search engine on {name}'s train split", ["engine", "train", *common])]
    steps = steps if train_engine else []
    steps += [
        ("build", f"build {name}: splits, frame store, index, hard negatives, SFT rows", ["build", name, *common]),
        ("channel", "soft-token ceiling of the engine", ["engine", "channel", name, *common,
                                                          f"run_name={name}-channel"]),
        ("base", "pretrain the base policy (ZS) on the synthetic world's generic tasks",
         ["train", "base", *common, "base.eval_videos=0", f"run_name={name}-base"]),
        ("sft", "SFT (token CE + InfoNCE)", ["train", "sft", name, "--checkpoint", str(runs / f"{name}-base" / "policy"),
                                             *common, f"run_name={name}-sft-train"]),
    ]
    return steps + tail(name, name, runs, common, grpo_steps, grpo_warmup)


def dataset_config(args, dataset: str):
    """Write <workspace>/data/toy-<D>/toy.yaml: the profile (or --config file) plus the toy copy's `datasets`
    entry and dataset=toy-<D>, and, where the file leaves them empty, engine.model = <workspace>/models/
    toy-<D>-engine and sft.teacher=none (template traces). Returns (its path, the config it gives)."""
    import yaml

    from videosearch_r1.config import to_dict
    from videosearch_r1.data.toyset import toy_entry, toy_name
    from videosearch_r1.utils import atomic_write_text

    base = config_from_args(args)
    name = toy_name(dataset)
    ws = Path(base.workspace).expanduser()
    data = yaml.safe_load(Path(args.config).read_text()) or {}
    data["dataset"] = name
    data["datasets"] = {**(data.get("datasets") or {}), name: to_dict(toy_entry(base, dataset))}
    for section, key, value in (("engine", "model", str(ws / "models" / f"{name}-engine")), ("sft", "teacher", "none")):
        data[section] = data.get(section) or {}
        data[section][key] = data[section].get(key) or value
    out = ws / "data" / name / "toy.yaml"
    atomic_write_text(out, "# written by `vsr1 toy --dataset " + dataset + "` (videosearch_r1/toy.py)\n"
                      + yaml.safe_dump(data, sort_keys=False))
    args.config = str(out)
    return out, config_from_args(args)


def _engine_decision(cfg, name: str, forced: bool) -> tuple[bool, str]:
    """(train?, why): the toy's own engine is trained when missing or trained from other settings; an
    engine.model given by the user is used as is."""
    from videosearch_r1.quickstart import engine_needs_training

    own = Path(cfg.workspace).expanduser() / "models" / f"{name}-engine"
    if Path(cfg.engine_model()).expanduser() != own:
        return False, f"engine.model={cfg.engine.model} given: used as is (not trained)"
    return (True, "forced by --from-step engine") if forced else engine_needs_training(cfg)


# toy.overlap: these steps run in a process of their own beside the step they are paired with (they share no
# outputs): the indexes and the channel check beside the base, the evaluations before GRPO beside GRPO
BESIDE = {"index": "base", "channel": "base", "infer": "grpo"}


class Lane:
    """Steps run one after another in child `vsr1` processes (output to `log`), on a thread of their own."""

    def __init__(self, steps: list[tuple[str, str, list[str]]], log: Path, who: str):
        self.steps, self.log, self.who = steps, log, who
        self.times: dict[str, float] = {}
        self.failed: str | None = None
        self.proc = None
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with open(self.log, "a") as out:
            for _, title, argv in self.steps:
                if self.stopped:  # the toy is stopping (a foreground step failed): start nothing more
                    self.failed = title
                    return
                out.write(f"\n==> {title}: vsr1 {' '.join(argv)}\n")
                out.flush()
                t = time.time()
                self.proc = subprocess.Popen([sys.executable, "-m", "videosearch_r1.cli", *argv], stdout=out,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                if self.proc.wait() != 0:
                    self.failed = title
                    return
                self.times[title] = time.time() - t
                out.write(f"    ({self.times[title]:.1f} s)\n")

    def start(self) -> "Lane":
        for _, title, argv in self.steps:
            print(f"\n==> {title} (beside the next steps, log {self.log}): vsr1 {' '.join(argv)}", flush=True)
        self.thread.start()
        return self

    def join(self) -> dict[str, float]:
        self.thread.join()
        if self.failed:
            raise SystemExit(f"vsr1 {self.who}: step '{self.failed}' failed (log {self.log}; rerun to resume)")
        for title, dt in self.times.items():
            print(f"    ({dt:.1f} s, beside: {title})", flush=True)
        return self.times

    def stop(self) -> None:
        self.stopped = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()


def run_plan(todo: list[tuple[str, str, list[str]]], overlap: bool, log_dir: Path, who: str = "toy") -> dict:
    """Run the plan's steps in order ({title: seconds}); with `overlap`, each run of consecutive BESIDE steps goes
    to a Lane started where it stands, and is joined before the first later step it is not paired with."""
    times, lane, partner, i = {}, None, None, 0
    try:
        while i < len(todo):
            step = todo[i][0]
            if lane is not None and step != partner:
                times.update(lane.join())
                lane = None
            if overlap and lane is None and step in BESIDE:
                j, partner = i, BESIDE[step]
                while j < len(todo) and BESIDE.get(todo[j][0]) == partner:
                    j += 1
                log_dir.mkdir(parents=True, exist_ok=True)
                lane, i = Lane(todo[i:j], log_dir / f"{who}-beside-{partner}.log", who).start(), j
                continue
            times[todo[i][1]] = cli.run_step(todo[i][1], todo[i][2], who)
            i += 1
        if lane is not None:
            times.update(lane.join())
    finally:
        if lane is not None:
            lane.stop()
    return times


def run_dataset(args, profile: str) -> int:
    """`vsr1 toy --dataset D`: the data step (data/toyset.py), then dataset_plan's steps."""
    from videosearch_r1.config import ConfigError
    from videosearch_r1.data.records import FIGFormatError
    from videosearch_r1.data.toyset import SELECTION, ToySetError, prepare, toy_name

    name = toy_name(args.dataset)
    first = REAL_STEPS.index(args.from_step or REAL_STEPS[0])
    t0, times, chosen = time.time(), {}, None
    try:
        config, cfg = dataset_config(args, args.dataset)
        if first == 0:
            print(f"\n==> choose {cfg.toy.videos_per_split} videos per split of {args.dataset}: {name} in "
                  f"{cfg.dataset_root(name)}", flush=True)
            chosen = prepare(cfg, args.dataset, args.video_source, args.annotations)
            print(chosen.format(), flush=True)
            times["choose the videos"] = time.time() - t0
        elif not (cfg.dataset_root(name) / SELECTION).is_file():
            raise ToySetError(f"--from-step {args.from_step}: {name} has no videos chosen yet "
                              f"({cfg.dataset_root(name) / SELECTION}); run without --from-step first")
    except (ToySetError, ConfigError, FIGFormatError) as e:
        print(f"vsr1 toy: {e}", file=sys.stderr)
        return 2
    train_engine, why = _engine_decision(cfg, name, args.from_step == "engine")
    if first <= REAL_STEPS.index("engine"):
        print(f"\nengine: {why}", flush=True)
    common = ["--config", str(config), *args.overrides]
    todo = dataset_plan(name, cfg.runs_dir(), common, cfg.toy.grpo_steps, cfg.toy.grpo_warmup, train_engine)
    times.update(run_plan([t for t in todo if REAL_STEPS.index(t[0]) >= first], cfg.toy.overlap,
                          Path(cfg.workspace).expanduser()))
    print(f"\nvsr1 toy --dataset {args.dataset} ({profile}) done in {time.time() - t0:.0f} s: workspace "
          f"{cfg.workspace}, report {cfg.runs_dir() / f'{name}-report'}", flush=True)
    if chosen is not None:
        per = ", ".join(f"{s} {len(c.chosen)}" for s, c in chosen.splits.items())
        print(f"  videos: {per}; skipped {chosen.skipped['missing']} missing, {chosen.skipped['corrupt']} corrupt",
              flush=True)
    for title, dt in times.items():
        print(f"  {dt:7.1f} s  {title}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("vsr1 toy", __doc__)
    parser.add_argument("--profile", default="auto", choices=("auto",) + PROFILES,
                        help="size profile (auto: gpu when CUDA is available)")
    parser.add_argument("--from-step", default=None, choices=tuple(dict.fromkeys(STEPS + REAL_STEPS)),
                        help="skip the steps before this one")
    parser.add_argument("--dataset", default=None, help="a real dataset (activitynet, charades, didemo): "
                        "toy.videos_per_split videos per split of it instead of the synthetic world")
    parser.add_argument("--video-source", default=None, help="--dataset: folder of its raw videos <id>.mp4")
    parser.add_argument("--annotations", default=None, help="--dataset: folder of its FIG files")
    args = parse_command(parser, argv)
    steps = REAL_STEPS if args.dataset else STEPS
    if args.from_step and args.from_step not in steps:
        parser.error(f"--from-step {args.from_step}: the {'real-dataset' if args.dataset else 'synthetic'} toy's "
                     f"steps are {', '.join(steps)}")
    if not args.dataset and (args.video_source or args.annotations):
        parser.error("--video-source / --annotations need --dataset")
    if args.dataset and (args.dataset == "synth" or args.dataset.startswith("toy-")):
        parser.error(f"--dataset {args.dataset}: a real dataset is expected (the synthetic toy is `vsr1 toy`)")
    profile = args.profile
    if profile == "auto":
        import torch

        profile = "gpu" if torch.cuda.is_available() else "cpu"
    config = args.config or str(profile_config(profile))
    args.config = config
    if args.dataset:
        return run_dataset(args, profile)
    cfg = config_from_args(args, ["dataset=synth"])
    common = ["--config", config, *args.overrides]
    runs = cfg.runs_dir()
    todo = plan(runs, common, cfg.toy.grpo_steps, cfg.toy.grpo_warmup)
    first = STEPS.index(args.from_step or STEPS[0])
    t0 = time.time()
    times = run_plan([t for t in todo if STEPS.index(t[0]) >= first], cfg.toy.overlap, Path(cfg.workspace).expanduser())
    print(f"\nvsr1 toy ({profile}) done in {time.time() - t0:.0f} s: workspace {cfg.workspace}", flush=True)
    for title, dt in times.items():
        print(f"  {dt:7.1f} s  {title}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

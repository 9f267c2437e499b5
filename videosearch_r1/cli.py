"""`vsr1`: one console script, one subcommand per module; each module exposes `main(argv) -> int`.

    vsr1 toy [--profile cpu|gpu]       the whole process end to end: world, engine, base, SFT, GRPO, report
    vsr1 quickstart                    build the synthetic world, train + index the engine, evaluate it
    vsr1 synth [key=value ...]         build the synthetic fine-grained VCMR world
    vsr1 engine train [key=value ...]  contrastive training of the synthetic search engine
    vsr1 engine channel DATASET        soft-token ceiling of the engine (per-query latents vs the truth)
    vsr1 index DATASET                 embed a corpus and build its FAISS index (resumable)
    vsr1 serve                         HTTP search service around the same engine
    vsr1 infer DATASET --checkpoint P  run the agent (or a baseline) on a split
    vsr1 report RUN.jsonl              metric table, result JSON and plots
    vsr1 evaluate PRED.jsonl           score predictions (paper view and TVR view)
    vsr1 make-tiny PATH --kind policy  a tiny random same-architecture checkpoint (demos, tests)
    vsr1 library add|status|remove DIR your own video folders, embedded as videos + moments (incremental)
    vsr1 search "TEXT" [--agent]       ranked moments of your library (or the agent's answer)
    vsr1 clip RESULT --out FILE        cut a search result to a new mp4
    vsr1 web                           a local page: search, thumbnails, play the moment
    vsr1 build sft DATASET             SFT rows from the train index (top-1 pairs, traces, negatives)
    vsr1 build DATASET [--from-step S] from raw videos: splits, frames, index, hard negatives, SFT/GRPO rows
    vsr1 data layout|annotations|check DATASET   raw layout, VERIFIED FIG files, missing/corrupt/extra videos
    vsr1 download checkpoint|data NAME released checkpoints by alias, the authors' prepared data (--mirror DIR)
    vsr1 train base [key=value ...]    the synthetic base policy (ZS): generic video tasks, engine-initialised
    vsr1 train sft DATASET --checkpoint P   SFT: token CE + InfoNCE of the SQR-refined query (accelerate)
    vsr1 train grpo DATASET --checkpoint P  multi-turn GRPO through the agent loop, SQR trained (accelerate)

Every subcommand takes `--config FILE.yaml` and dotted overrides such as `agent.max_turns=2`.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "quickstart": "videosearch_r1.quickstart",
    "toy": "videosearch_r1.toy",
    "synth": "videosearch_r1.synth.build",
    "engine": {"train": "videosearch_r1.engine.train", "channel": "videosearch_r1.engine.channel"},
    "index": "videosearch_r1.engine.index",
    "serve": "videosearch_r1.engine.server",
    "infer": "videosearch_r1.agent.infer",
    "report": "videosearch_r1.agent.report",
    "evaluate": "videosearch_r1.eval.evaluate",
    "make-tiny": "videosearch_r1.models.tiny",
    "library": "videosearch_r1.library.build",
    "search": "videosearch_r1.library.search",
    "clip": "videosearch_r1.library.clip",
    "web": "videosearch_r1.library.web",
    "build": "videosearch_r1.data.build",  # `vsr1 build sft|grpo ...` goes on to build.sft_module / grpo_module
    "data": "videosearch_r1.data.raw",
    "download": "videosearch_r1.data.download",
    "train": {"sft": "videosearch_r1.train.sft", "base": "videosearch_r1.train.base", "grpo": "videosearch_r1.train.grpo"},
}


def _usage() -> str:
    return (__doc__ or "").strip()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from videosearch_r1 import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    target = COMMANDS.get(name)
    if isinstance(target, dict):
        if not rest or rest[0] not in target:
            print(f"usage: vsr1 {name} {{{','.join(target)}}} ...", file=sys.stderr)
            return 2
        target, rest = target[rest[0]], rest[1:]
    if target is None:
        print(f"vsr1: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(target)
    return int(module.main(rest) or 0)



def run_step(title: str, argv: list[str], who: str) -> float:
    """Run one `vsr1` subcommand in this process as a step of a pipeline command (`who`: quickstart,
    toy): print it, time it, and stop with the step named when it fails. Returns its seconds."""
    import time

    print(f"\n==> {title}: vsr1 {' '.join(argv)}", flush=True)
    t = time.time()
    rc = main(argv)
    if rc != 0:
        raise SystemExit(f"vsr1 {who}: step '{title}' failed with exit code {rc} (rerun to resume)")
    dt = time.time() - t
    print(f"    ({dt:.1f} s)", flush=True)
    return dt

if __name__ == "__main__":
    sys.exit(main())

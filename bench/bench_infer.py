"""Bench: end-to-end `vsr1 infer` (issue 18): queries/s, turns/s, the wall-time split and a GPU-busy fraction.

    bash bench/device_setup.sh && python bench/bench_infer.py --device cuda --tag h200_2026-12-01
        # one H200, carry [".wheels"]; renders + indexes 48 videos, 96 queries x 3 turns at batch 32; < 6 min
    python bench/bench_infer.py --smoke                   # CPU: tiny world, tiny policy, 6 queries; < 90 s

What runs (in a temporary workspace, deleted at the end unless --keep):
1. `vsr1 synth` (in-process cli.main) renders a synthetic world at the reference's pixel budget: 448x448
   mp4s at 2 fps, 32-34 s long, so that the synth dataset's video budget (overridden here to fps 2,
   max_frames 64, pixels 128..256 x 28^2, i.e. the reference's 64 frames at <= 448^2) samples every clip
   fully: each verification prompt carries 64 frames = 32 temporal patches x 196 merged tokens = 6,272
   visual tokens (the reference's budget) + the text in the tiny BPE tokenizer (system prompt, query, a
   timestamp per patch: several hundred tokens, more than Qwen's tokenizer would give; printed as
   "prompt:" and saved as `prompt` in the JSON). The test split holds
   --families families x 4 variants x 2 queries (train/val get 1 family each: not used).
2. a RANDOM small same-architecture engine (models/tiny.py, size "small"; retrieval quality is not the
   point, so the engine is not trained) and `vsr1 index synth --split test` with it.
3. a policy checkpoint of Qwen3-VL-2B shapes (bench_agent.model_config: 28 layers x 2048, vision 24 x 1024,
   vocab 151,936) with random bf16 weights, the tiny BPE tokenizer (models/tiny.py) for its text, saved as
   a directory `Policy.from_pretrained` loads. The input embeddings and lm_head are untied (same shapes and
   bytes read per decode step as the tied 2B model) so that the random policy can carry a planted
   script (--script, default on): the token embeddings are scaled up so the last hidden state points at
   the current token, and the lm_head rows of a fixed chain of token ids point at their predecessors.
   Greedy decoding then emits, on every turn, exactly `--max-new-tokens` tokens (127 + <|im_end|>):
   `<think>` 120-odd distinct words `</think> <answer>not_matched</answer> <REFINE>`, which the loop
   parses as not_matched + <REFINE>: every query runs all 3 turns, each with an SQR rollout. The loop has no
   ignore_eos switch; this is how the lengths are fixed. --no-script: the plain random policy (its
   output is unparseable: every query stops "malformed" after turn 1, and no SQR runs).
4. agent.method=sqr, max_turns 3, agent.batch_size --batch-size, agent.max_new_tokens --max-new-tokens,
   every other agent.* field at its default (bucketed prefill, vision cache, compiled + graphed decode,
   prefetch). The engine and policy are loaded with agent/infer.py's load_engine / load_policy, then
   agent.infer.run_infer (what `vsr1 infer` calls) runs twice with them: a warm-up run over the first
   batch (compile, graph capture, allocator) and, after emptying the vision cache, the timed run over
   --queries queries.
Reported: queries/s and turns/s of the timed run (its wall time, from run_infer's start to its summary),
the split of that wall time by the loop's stages (summary timings_s: clips = decode + prefetch waits,
embed, search, generate = verification turns, rollout = SQR latents, rank = GT-rank logging), the text
tokens generated, the stop reasons, the vision-cache stats, and the GPU-busy fraction: `nvidia-smi
--query-gpu=utilization.gpu --loop-ms=100` sampled in a background thread during the timed run (the share of
each ~100 ms window in which a kernel ran; coarse: a window with one kernel counts as busy), mean over
the samples ("n/a" without nvidia-smi); beside it the share of the wall spent in the loop's GPU stages
(embed, search, generate, rollout, rank: host-timed, so it includes their CPU work). Prints a table;
writes bench/results/bench_infer_<tag>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from videosearch_r1.utils import atomic_write_json  # noqa: E402

import videosearch_r1  # noqa: E402,F401  (torchvision shim before transformers)

STAGES = ("clips", "embed", "search", "generate", "rollout", "rank")
GPU_STAGES = ("embed", "search", "generate", "rollout", "rank")  # the loop's stages on the GPU (engine, policy)
REFERENCE_BUDGET = "{fps: 2.0, max_frames: 64, min_frames: 2, min_pixels: 100352, max_pixels: 200704}"
SCRIPT_TAIL = "</think> <answer>not_matched</answer> "  # then <REFINE>, then <|im_end|>


# ------------------------------------------------------------------------------------ world + engine
def overrides(args, ws: Path) -> list[str]:
    """Config overrides of every step: the workspace, the world's size and look, the video budget, the agent."""
    ov = [f"workspace={ws}", "dataset=synth", "split=test", f"seed={args.seed}",
          "agent.method=sqr", f"agent.max_turns={args.max_turns}", f"agent.batch_size={args.batch_size}",
          f"agent.max_new_tokens={args.max_new_tokens}", f"agent.device={args.device}"]
    if args.smoke:
        return ov + ["synth.preset=tiny", "synth.long_fraction=0", "synth.max_duration=12"]
    return ov + ["synth.preset=default", f"synth.families={{train: 1, val: 1, test: {args.families}}}",
                 "synth.variants_per_family=4", "synth.queries_per_video=2", "synth.width=448",
                 "synth.height=448", "synth.fps=2", "synth.min_duration=32", "synth.max_duration=34",
                 "synth.long_fraction=0", f"datasets.synth.video={REFERENCE_BUDGET}"]


def build_world(args, ov: list[str]) -> dict:
    """`vsr1 synth` + a random engine checkpoint + `vsr1 index synth --split test`; seconds per step."""
    from videosearch_r1 import cli
    from videosearch_r1.config import load_config
    from videosearch_r1.models.tiny import make_tiny_checkpoint

    out = {}
    t = time.perf_counter()
    if cli.main(["synth", *ov]) != 0:
        raise RuntimeError("vsr1 synth failed")
    out["synth_s"] = time.perf_counter() - t
    cfg = load_config(None, ov)
    make_tiny_checkpoint(cfg.engine_model(), kind="embedder", size="tiny" if args.smoke else "small",
                         video_cfg=cfg.video_cfg("synth"), seed=1)
    t = time.perf_counter()
    if cli.main(["index", "synth", "--split", "test", *ov]) != 0:
        raise RuntimeError("vsr1 index failed")
    out["index_s"] = time.perf_counter() - t
    return out


# ------------------------------------------------------------------------------------ policy checkpoint
def script_ids(tok, length: int, first_pred: int) -> list[int]:
    """`length` token ids, each distinct and != first_pred: <think>, distinct word tokens, SCRIPT_TAIL
    (pieces already used are spelt as single characters), <REFINE>. Each id has one successor, so a
    model that maps the current token to its successor emits the whole chain greedily."""
    from videosearch_r1.agent.prompts import REFINE_TOKEN

    used = {first_pred}
    tail: list[int] = []
    for i in tok(SCRIPT_TAIL, add_special_tokens=False)["input_ids"]:
        piece = [i] if i not in used else [tok.convert_tokens_to_ids(c) for c in tok.convert_ids_to_tokens(i)]
        if any(p in used or p is None or p == tok.unk_token_id for p in piece):
            raise ValueError(f"script: cannot spell {tok.convert_ids_to_tokens(i)!r} with unused ids")
        tail += piece
        used.update(piece)
    head = tok.convert_tokens_to_ids("<think>")
    tail.append(tok.convert_tokens_to_ids(REFINE_TOKEN))
    used.update([head, tail[-1]])
    special = set(tok.all_special_ids)
    words = [i for t, i in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
             if i not in used and i not in special and t.lstrip("Ġ").isalpha() and t.startswith("Ġ")]
    need = length - 1 - len(tail)
    if need < 1 or len(words) < need:
        raise ValueError(f"script: {length} tokens need {need} distinct word tokens, the tokenizer has {len(words)}")
    return [head] + words[:need] + tail


def plant_script(model, chain: list[int], first_pred: int, eos: int, embed_rms: float = 100.0) -> None:
    """Scale the (untied) input embeddings to rms `embed_rms` and point lm_head row chain[i] at the
    embedding of its predecessor (first_pred for chain[0]); <|im_end|> follows the last id."""
    emb = model.get_input_embeddings().weight
    head = model.lm_head.weight
    with torch.no_grad():
        emb.mul_(embed_rms / emb.float().pow(2).mean().sqrt())
        preds, succ = [first_pred] + chain, chain + [eos]
        for a, b in zip(preds, succ):
            head[b] = (emb[a].float() / emb[a].float().norm()).to(head.dtype)


def make_policy_checkpoint(args, path: Path, vcfg) -> dict:
    """Write the policy directory (module doc, step 3). -> facts about it (params, script)."""
    from videosearch_r1.models.qwen3vl import build_processor

    model, tok, facts = build_model(args)
    model.save_pretrained(path)
    build_processor(tok, vcfg).save_pretrained(path)
    del model
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return facts


def build_model(args):
    """The random bf16 Qwen3VLForConditionalGeneration (2B shapes; tiny with --smoke), untied, with the
    tiny tokenizer's special ids and (--script) the planted script. -> (model, tokenizer, facts)"""
    from transformers import Qwen3VLForConditionalGeneration

    from bench_agent import model_config
    from videosearch_r1.agent.prompts import parse_output
    from videosearch_r1.models.tiny import build_tokenizer, tiny_config

    tok = build_tokenizer(refine_token=True)
    cfg = tiny_config(tok, "tiny") if args.policy == "tiny" else model_config(False)
    ids = {k: tok.convert_tokens_to_ids(t) for k, t in (("image", "<|image_pad|>"), ("video", "<|video_pad|>"),
           ("vs", "<|vision_start|>"), ("ve", "<|vision_end|>"), ("eos", "<|im_end|>"), ("pad", "<|endoftext|>"))}
    cfg.image_token_id, cfg.video_token_id = ids["image"], ids["video"]
    cfg.vision_start_token_id, cfg.vision_end_token_id = ids["vs"], ids["ve"]
    cfg.pad_token_id = cfg.text_config.pad_token_id = ids["pad"]
    cfg.eos_token_id = cfg.text_config.eos_token_id = ids["eos"]
    cfg.tie_word_embeddings = cfg.text_config.tie_word_embeddings = False
    dev = "cuda" if args.device.startswith("cuda") else "cpu"
    torch.manual_seed(args.seed)
    with torch.device(dev):
        model = Qwen3VLForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16).eval()
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = ids["eos"], ids["pad"]
    facts = dict(params=sum(p.numel() for p in model.parameters()), vocab=cfg.text_config.vocab_size,
                 hidden=cfg.text_config.hidden_size, layers=cfg.text_config.num_hidden_layers, script=None)
    if args.script:
        first = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"][-1]
        chain = script_ids(tok, args.max_new_tokens - 1, first)
        plant_script(model, chain, first, ids["eos"])
        text = tok.decode(chain)
        parsed = parse_output(text)
        if parsed.answer != "not_matched" or "<REFINE>" not in text:
            raise RuntimeError(f"script does not parse as not_matched + <REFINE>: {parsed} from {text!r}")
        facts["script"] = text
        facts["script_ids"] = chain
    return model, tok, facts


# ------------------------------------------------------------------------------------ GPU-busy sampler
class GpuBusy:
    """`nvidia-smi --query-gpu=utilization.gpu --loop-ms=PERIOD` read in a thread between start() and stop()."""

    def __init__(self, period_ms: int = 100):
        self.period_ms, self.samples, self.proc, self.thread, self.error = period_ms, [], None, None, None

    def start(self) -> None:
        gpu = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
        try:
            self.proc = subprocess.Popen(["nvidia-smi", "-i", gpu, "--query-gpu=utilization.gpu",
                                          "--format=csv,noheader,nounits", f"--loop-ms={self.period_ms}"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError as e:
            self.error = f"nvidia-smi: {e}"
            return
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                continue

    def stop(self) -> dict:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.thread.join(timeout=10)
        if not self.samples:
            return dict(busy_fraction=None, samples=0, error=self.error or "no samples")
        return dict(busy_fraction=statistics.fmean(self.samples) / 100, samples=len(self.samples),
                    period_ms=self.period_ms, error=None)


# ------------------------------------------------------------------------------------ the run
def timed_infer(cfg, engine, policy, limit: int, name: str, sample_gpu: bool) -> tuple[dict, dict, float]:
    """run_infer (what `vsr1 infer` calls) with the loaded engine / policy -> (summary, gpu stats, wall s)."""
    from videosearch_r1.agent.infer import run_infer

    cfg.run_name = name
    gpu = GpuBusy()
    if sample_gpu:
        gpu.start()
        time.sleep(0.3)  # the first sample lands before the run starts
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    summary = run_infer(cfg, limit=limit, engine=engine, policy=policy)
    wall = time.perf_counter() - t
    stats = gpu.stop() if sample_gpu else dict(busy_fraction=None, samples=0, error="not sampled (cpu)")
    return summary, stats, wall


def prompt_size(cfg, policy) -> dict:
    """Tokens of one first-turn prompt (the split's first query and its GT video): total and visual."""
    from videosearch_r1.data.fig import load_split
    from videosearch_r1.video.decode import load_clip

    q = load_split(cfg, "synth", "test").queries[0]
    clip = load_clip(cfg, "synth", q.video_id)
    ids = policy.build_inputs([getattr(q, cfg.dataset_cfg("synth").query_field)], [clip])["input_ids"]
    return dict(frames=int(clip.frames.shape[0]), frame_hw=list(clip.frames.shape[1:3]), tokens=int(ids.shape[1]),
                visual_tokens=int((ids == policy.model.config.video_token_id).sum()))


def run_stats(summary: dict, wall: float) -> dict:
    """Turns, tokens and latents of the run's predictions (its summary's run dir)."""
    rows = [json.loads(x) for x in (Path(summary["run_dir"]) / "predictions.jsonl").read_text().splitlines() if x]
    turns = [t for r in rows for t in r.get("turns", [])]
    n = summary["finished"]
    return dict(queries=n, turns=len(turns), queries_per_s=n / wall, turns_per_s=len(turns) / wall,
                text_tokens=sum(t.get("text_tokens", 0) for t in turns),
                tokens_per_turn=(sum(t.get("text_tokens", 0) for t in turns) / len(turns)) if turns else 0.0,
                latents=sum(t.get("latent_tokens", 0) for t in turns),
                rollouts=sum(1 for t in turns if t.get("latent_tokens", 0)), stop_reasons=summary["stop_reasons"])


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny world + tiny policy, 6 queries (< 90 s)")
    ap.add_argument("--tag", default="", help="JSON name bench/results/bench_infer_<tag>.json (default: device)")
    ap.add_argument("--out", default="", help="JSON path (overrides --tag)")
    ap.add_argument("--policy", choices=("2b", "tiny"), default=None, help="policy shapes (default: 2b; --smoke: tiny)")
    ap.add_argument("--families", type=int, default=12, help="test families (x 4 videos x 2 queries)")
    ap.add_argument("--queries", type=int, default=None, help="queries of the timed run (96; --smoke: 6)")
    ap.add_argument("--batch-size", type=int, default=None, help="agent.batch_size (32; --smoke: 4)")
    ap.add_argument("--max-new-tokens", type=int, default=None,
                    help="agent.max_new_tokens (128; --smoke: 24); the script fills it")
    ap.add_argument("--max-turns", type=int, default=3, help="agent.max_turns")
    ap.add_argument("--no-script", dest="script", action="store_false", help="plain random policy (no plant)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="", help="workspace (default: a fresh temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the workspace")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device = "cpu"
    small = dict(policy="tiny", queries=6, batch_size=4, max_new_tokens=24)  # the tiny world's 6 test queries
    full = dict(policy="2b", queries=96, batch_size=32, max_new_tokens=128)
    for k, v in (small if args.smoke else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def report(res: dict) -> None:
    r, gpu = res["timed"], res["gpu"]
    print(f"\nbench_infer on {res['device']}: {r['queries']} queries, batch {res['batch_size']}, max_turns "
          f"{res['max_turns']}, max_new_tokens {res['max_new_tokens']}, script {'on' if res['script'] else 'off'}")
    p = res["prompt"]
    print(f"prompt: {p['frames']} frames at {p['frame_hw'][0]}x{p['frame_hw'][1]}, {p['tokens']} tokens "
          f"({p['visual_tokens']} visual); decode path {res['decode_path']}")
    print(f"{'queries/s':>10}{'turns/s':>9}{'turns':>7}{'tok/turn':>9}{'rollouts':>9}{'wall s':>8}{'GPU busy':>10}")
    busy = "n/a" if gpu["busy_fraction"] is None else f"{100 * gpu['busy_fraction']:.1f}%"
    print(f"{r['queries_per_s']:>10.3f}{r['turns_per_s']:>9.3f}{r['turns']:>7}{r['tokens_per_turn']:>9.1f}"
          f"{r['rollouts']:>9}{res['timed_wall_s']:>8.1f}{busy:>10}")
    print("wall split: " + "  ".join(f"{k} {v:.2f} s ({100 * v / res['timed_wall_s']:.0f}%)"
                                     for k, v in res["split_s"].items()))
    print(f"GPU stages (embed, search, generate, rollout, rank) take {100 * gpu['gpu_stage_share']:.1f}% of the "
          f"wall; nvidia-smi busy {busy} over {gpu['samples']} samples")
    print(f"stop reasons {r['stop_reasons']}; vision cache {res['vision_cache']}")
    print(f"setup: synth {res['setup_s']['synth_s']:.1f} s, index {res['setup_s']['index_s']:.1f} s, policy "
          f"checkpoint {res['setup_s']['checkpoint_s']:.1f} s, load {res['setup_s']['load_s']:.1f} s, warm-up "
          f"run {res['setup_s']['warmup_s']:.1f} s; total {res['wall_s']:.0f} s")


def main(argv=None) -> int:
    import transformers

    from videosearch_r1.agent.infer import load_engine, load_policy
    from videosearch_r1.config import load_config

    args = parse_args(argv)
    t0 = time.perf_counter()
    ws = Path(args.workdir or tempfile.mkdtemp(prefix="vsr1-bench-infer-"))
    try:
        ov = overrides(args, ws)
        setup = build_world(args, ov)
        cfg = load_config(None, ov)
        t = time.perf_counter()
        pol_dir = ws / "models" / "policy-2b-random"
        facts = make_policy_checkpoint(args, pol_dir, cfg.video_cfg("synth"))
        setup["checkpoint_s"] = time.perf_counter() - t
        cfg.agent.checkpoint = str(pol_dir)
        t = time.perf_counter()
        engine = load_engine(cfg, "synth", "test")
        policy = load_policy(cfg, engine)
        setup["load_s"] = time.perf_counter() - t
        prompt = prompt_size(cfg, policy)
        cuda = args.device.startswith("cuda")
        warm, _, setup["warmup_s"] = timed_infer(cfg, engine, policy, args.batch_size, "warmup", False)
        a = cfg.agent
        policy.set_prefill(a.prefill_tokens, a.vision_cache_mb)  # a cold vision cache for the timed run
        summary, gpu, wall = timed_infer(cfg, engine, policy, args.queries, "timed", cuda)
        timings = summary["timings_s"]
        split = {k: timings.get(k, 0.0) for k in STAGES}
        split["other"] = max(0.0, wall - sum(split.values()))
        gpu["gpu_stage_share"] = sum(split[k] for k in GPU_STAGES) / wall  # wall time of the GPU stages / wall
        name = torch.cuda.get_device_name() if cuda else "cpu"
        res = dict(bench="bench_infer", date=time.strftime("%Y-%m-%d %H:%M"), device=name, torch=torch.__version__,
                   transformers=transformers.__version__, smoke=args.smoke, policy_shapes=args.policy,
                   batch_size=args.batch_size,
                   max_turns=args.max_turns, max_new_tokens=args.max_new_tokens, script=args.script,
                   policy=facts, prompt=prompt, decode_path=summary.get("decode"),
                   video_budget=str(cfg.video_cfg("synth")),
                   timed=run_stats(summary, wall), timed_wall_s=wall, run_infer_wall_s=summary["wall_s"],
                   split_s=split, timings_s=timings, counts=summary["counts"], gpu=gpu,
                   vision_cache=summary["vision_cache"], warmup_stop_reasons=warm["stop_reasons"],
                   index_videos=summary["index_videos"], setup_s=setup, wall_s=time.perf_counter() - t0)
        report(res)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(ws, ignore_errors=True)
    tag = args.tag or ("smoke" if args.smoke else name.split()[-1].lower())
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"bench_infer_{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, res)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

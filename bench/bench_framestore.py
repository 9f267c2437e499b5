"""Frame store load paths vs raw npy frames, per 64-frame clip: size, CPU (1 and N threads), CUDA (nvjpeg).

    python bench/bench_framestore.py --out bench_framestore.json                 # CPU rows
    python bench/bench_framestore.py --device cuda --out bench_framestore.json   # + nvjpeg and npy->GPU rows
    python bench/bench_framestore.py --smoke --out /tmp/smoke.json               # 2 short clips, 1 repeat

Self-contained: frames are synthesised in numpy (smooth panning gradients + moving coloured shapes + mild
noise, T x 320 x 576 x 3, the reference budget for 16:9), no video decoding, so it needs only numpy, torch,
torchvision, Pillow and videosearch_r1.video.framestore (PyAV is not needed; see the import note below).
For C distinct clips it writes each as frames.npy and into a FrameStore, then measures, per clip:
- npy: np.load page-cached, and after posix_fadvise(DONTNEED) on every file. On a VM those reads may still
  come from the host's cache: the implied MiB/s is printed so the reader can judge. Not a cold-disk figure
  unless that rate is what the disk delivers.
- store, CPU: FrameStore.get one clip at a time (latency) with 1..N decoder threads, and get_many over all
  C clips (throughput: frames of every clip spread over the threads), page-cached and after fadvise.
- --device cuda: npy -> torch -> GPU copy vs FrameStore.get(device) / get_many(device) (one nvjpeg batch),
  synchronised, plus the pixel difference nvjpeg vs Pillow. torchvision's own CPU decode_jpeg
  (libjpeg-turbo without Pillow) is timed too when its image extension loads (not used by the store).
Timings: best of R passes (wall and CPU time of this process, all threads), "after fadvise" the median.
"Break-even MiB/s": storage read speed below which the store row beats the npy row of the same device
(npy time = size / speed + its page-cached time; store likewise with its own size).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import videosearch_r1  # noqa: E402,F401  (installs the torchvision shim before torchvision is imported)

try:
    import av  # noqa: F401
except ImportError:
    # The GPU image has no PyAV. framestore imports video/decode.py for its types (Clip, VideoInfo, VideoError),
    # and decode.py imports av at module level; this bench decodes no video, so an import-only placeholder is
    # enough. (Remove once decode.py imports av lazily.)
    print("note: PyAV not installed; import-only placeholder for `av` (this bench decodes no video)")
    for name in ("av", "av.video", "av.video.reformatter"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["av.video.reformatter"].VideoReformatter = None

from videosearch_r1.utils import atomic_write_json  # noqa: E402
from videosearch_r1.config import VideoConfig  # noqa: E402
from videosearch_r1.video.decode import Clip, VideoInfo  # noqa: E402
from videosearch_r1.video.framestore import FrameStore  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--out", default="bench_framestore.json", help="JSON results")
p.add_argument("--device", default="cpu", help="cpu, or cuda[:i] to add the nvjpeg / npy->GPU rows")
p.add_argument("--clips", type=int, default=16, help="distinct clips C (each written as npy and into the store)")
p.add_argument("--frames", type=int, default=64, help="frames per clip T")
p.add_argument("--height", type=int, default=320, help="frame height (multiple of 32)")
p.add_argument("--width", type=int, default=576, help="frame width (multiple of 32)")
p.add_argument("--workers", default="", help="decoder thread counts, e.g. 1,4,16 (default 1,2,4,.. up to the CPUs)")
p.add_argument("--gpu-batch", type=int, default=8, help="clips per get_many call on the GPU")
p.add_argument("--repeats", type=int, default=3, help="timing passes (best of / median of)")
p.add_argument("--quality", type=int, default=90, help="JPEG quality of the store (the FrameStore default is 90)")
p.add_argument("--workdir", default="", help="where the npy files and the store go (default: a temp dir)")
p.add_argument("--smoke", action="store_true", help="smoke mode: 2 clips of 16 frames, 1 repeat")
args = p.parse_args()
C, T, H, W = (2, 16, args.height, args.width) if args.smoke else (args.clips, args.frames, args.height, args.width)
R = 1 if args.smoke else args.repeats
ncpu = os.cpu_count() or 1
workers = sorted({int(x) for x in args.workers.split(",") if x}) if args.workers else \
    sorted({w for w in (1, 2, 4, 8, 16, 32) if w <= ncpu} | {ncpu})
cuda = args.device != "cpu"
dev = torch.device(args.device)
if cuda and not torch.cuda.is_available():
    sys.exit(f"--device {args.device}: CUDA is not available")
if H % 32 or W % 32:
    sys.exit(f"--height/--width must be multiples of 32, got {H}x{W}")
work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-framestore-"))
work.mkdir(parents=True, exist_ok=True)
t0, load0 = time.time(), os.getloadavg()
print(f"{C} clips of {T}x{H}x{W}x3, {R} repeats, workers {workers}, device {args.device}; load average "
      f"{load0[0]:.2f} on {ncpu} CPUs (other jobs inflate wall times); workdir {work}")


# ----------------------------------------------------------------------------- synthetic clips
def synth_clip(seed: int) -> np.ndarray:
    """[T,H,W,3] uint8: a smooth random colour field panning sideways + a diagonal gradient, four moving
    shapes (rectangles and discs of saturated colours), and sensor-like noise (sigma ~3 grey levels)."""
    rng = np.random.default_rng(seed)
    pan = 3 * T
    coarse = rng.integers(0, 256, (H // 48 + 2, (W + pan) // 48 + 2, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((W + pan, H), Image.BICUBIC), dtype=np.float32)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    grad = (0.25 * (xx / W + yy / H) * 255)[..., None]
    shapes = [dict(kind=k, col=rng.integers(0, 256, 3), r=rng.uniform(15, 45), x=rng.uniform(0, W),
                   y=rng.uniform(0, H), vx=rng.uniform(-9, 9), vy=rng.uniform(-5, 5)) for k in ("rect", "disc") * 2]
    out = np.empty((T, H, W, 3), np.uint8)
    for t in range(T):
        img = 0.75 * field[:, 3 * t:3 * t + W] + grad
        for s in shapes:
            cx, cy = (s["x"] + s["vx"] * t) % W, (s["y"] + s["vy"] * t) % H
            if s["kind"] == "disc":
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 < s["r"] ** 2
            else:
                mask = (abs(xx - cx) < s["r"]) & (abs(yy - cy) < 0.6 * s["r"])
            img[mask] = s["col"]
        img += rng.normal(0, 3, img.shape).astype(np.float32)
        out[t] = np.clip(img, 0, 255)
    return out


vcfg = VideoConfig(fps=1.0, max_frames=max(T, 2), min_frames=2, min_pixels=H * W, max_pixels=H * W)
store = FrameStore(work / f"store_q{args.quality}", video_cfg=vcfg, quality=args.quality)
ids, npys, refs = [f"clip{i:03d}" for i in range(C)], [], {}
for i, vid in enumerate(ids):
    npy = work / f"{vid}.npy"
    npys.append(npy)
    if npy.exists() and vid in store:
        continue
    frames = synth_clip(i)
    with open(npy, "wb") as f:
        np.save(f, frames)
        f.flush()
        os.fsync(f.fileno())  # dirty pages cannot be dropped by fadvise
    info = VideoInfo(path=str(npy), duration=float(T), fps=1.0, num_frames=T, width=W, height=H)
    store.put(vid, Clip(frames, np.arange(T) + 0.5, np.arange(T, dtype=np.int64), info), overwrite=True)
ref0 = np.load(npys[0])
npy_mib = float(np.mean([f.stat().st_size for f in npys])) / 2 ** 20
store_mib = float(np.mean([(store.root / f"{v}.npz").stat().st_size for v in ids])) / 2 ** 20
got0 = store.get(ids[0]).frames
psnr = float(10 * np.log10(255.0 ** 2 / np.mean((got0.astype(np.float64) - ref0) ** 2)))
print(f"clips ready in {time.time() - t0:.1f} s: npy {npy_mib:.2f} MiB/clip, store {store_mib:.2f} MiB/clip "
      f"({npy_mib / store_mib:.1f}x smaller), JPEG q{args.quality} 4:4:4 PSNR {psnr:.2f} dB")


# ----------------------------------------------------------------------------- timing helpers
def sync() -> None:
    if cuda:
        torch.cuda.synchronize(dev)


def evict_all() -> None:
    for path in npys + [store.root / f"{v}.npz" for v in ids]:
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def warm_all() -> None:
    for path in npys + [store.root / f"{v}.npz" for v in ids]:
        path.read_bytes()


def run_pass(fn) -> None:
    fn()
    sync()


def measure(fn, cache: str) -> tuple[float, float]:
    """(wall ms per clip, CPU ms per clip) for one pass over all C clips; page: best of R, fadvise: median."""
    walls, cpus = [], []
    for _ in range(R):
        if cache == "fadvise":
            evict_all()
        else:
            warm_all()
        t, c = time.perf_counter(), time.process_time()
        run_pass(fn)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    pick = min if cache == "page" else np.median
    return float(pick(walls)) * 1e3 / C, float(pick(cpus)) * 1e3 / C


rows: list[dict] = []


def add(name: str, device: str, nworkers: int, mode: str, cache: str, fn, mib: float) -> dict:
    wall, cpu = measure(fn, cache)
    row = dict(name=name, device=device, workers=nworkers, mode=mode, cache=cache, ms=wall, cpu_ms=cpu, mib=mib)
    rows.append(row)
    return row


# ----------------------------------------------------------------------------- per-frame cost split (Pillow)
def frame_split() -> dict:
    """ms per frame of the store's CPU decode steps on clip 0. Only `load` (libjpeg-turbo) runs without the
    GIL; open (header parse) and asarray (Pillow's tobytes) hold it, which caps the thread speed-up."""
    import io

    with np.load(store.root / f"{ids[0]}.npz") as z:
        jpeg, offs = z["jpeg"], z["offsets"]
    out, best = np.empty((T, H, W, 3), np.uint8), None
    for _ in range(max(R, 3)):
        t_open = t_load = t_arr = t_copy = 0.0
        for i in range(T):
            t = time.perf_counter()
            img = Image.open(io.BytesIO(jpeg[offs[i]:offs[i + 1]].tobytes()), formats=("JPEG",))
            t1 = time.perf_counter()
            img.load()
            t2 = time.perf_counter()
            a = np.asarray(img)
            t3 = time.perf_counter()
            out[i] = a
            t_open, t_load, t_arr, t_copy = (t_open + t1 - t, t_load + t2 - t1, t_arr + t3 - t2,
                                             t_copy + time.perf_counter() - t3)
        cur = dict(open_ms=t_open, load_ms=t_load, asarray_ms=t_arr, copy_ms=t_copy)
        best = cur if best is None or sum(cur.values()) < sum(best.values()) else best
    split = {k: v * 1e3 / T for k, v in best.items()}
    held = (split["open_ms"] + split["asarray_ms"]) / sum(split.values())
    split["gil_held_fraction"] = held
    print(f"Pillow per frame: open {split['open_ms']:.3f} ms, load {split['load_ms']:.3f} ms (GIL released), "
          f"asarray {split['asarray_ms']:.3f} ms, copy {split['copy_ms']:.3f} ms; GIL held {100 * held:.0f}% "
          f"(thread speed-up at most ~{1 / held:.1f}x)")
    return split


split = frame_split()

# ----------------------------------------------------------------------------- CPU rows
pools = {w: ThreadPoolExecutor(w) for w in workers}
for cache in ("page", "fadvise"):
    add("npy np.load", "cpu", 1, "latency", cache, lambda: [np.load(p) for p in npys], npy_mib)
    wmax = workers[-1]
    if wmax > 1:
        add("npy np.load", "cpu", wmax, "batch", cache, lambda: list(pools[wmax].map(np.load, npys)), npy_mib)
    for w in workers:
        add("store get", "cpu", w, "latency", cache, lambda: [store.get_many([v], workers=w) for v in ids], store_mib)
    for w in workers[1:]:
        add("store get_many", "cpu", w, "batch", cache, lambda: store.get_many(ids, workers=w), store_mib)


def tv_cpu_decode(nworkers: int) -> None:
    """torchvision.io.decode_jpeg on CPU (libjpeg-turbo, no Pillow; informational, not the store's CPU path):
    one call per clip on 1 thread, else one call per frame over a thread pool."""
    from torchvision.io import ImageReadMode, decode_jpeg

    blobs = []
    for v in ids:
        with np.load(store.root / f"{v}.npz") as z:
            jpeg, offs = z["jpeg"], z["offsets"]
        blobs.append([torch.from_numpy(jpeg[offs[i]:offs[i + 1]]) for i in range(len(offs) - 1)])
        if nworkers == 1:
            decode_jpeg(blobs[-1], mode=ImageReadMode.RGB)
    if nworkers > 1:
        list(pools[nworkers].map(lambda b: decode_jpeg(b, mode=ImageReadMode.RGB), [b for bs in blobs for b in bs]))


try:
    tv_cpu_decode(1)
    add("torchvision decode_jpeg (not the store path)", "cpu", 1, "latency", "page", lambda: tv_cpu_decode(1),
        store_mib)
    if workers[-1] > 1:
        add("torchvision decode_jpeg (not the store path)", "cpu", workers[-1], "batch", "page",
            lambda: tv_cpu_decode(workers[-1]), store_mib)
except Exception as e:  # noqa: BLE001  (CPU torch + CUDA torchvision here: no image extension)
    print(f"torchvision CPU decode_jpeg unavailable: {type(e).__name__}: {str(e)[:120]}")

# ----------------------------------------------------------------------------- CUDA rows
gpu = {}
if cuda:
    store.get(ids[0], device=dev)  # nvjpeg handle, CUDA context, allocator warm-up
    torch.from_numpy(ref0).to(dev)
    sync()
    gb = max(1, args.gpu_batch)
    batches = [ids[i:i + gb] for i in range(0, C, gb)]
    for cache in ("page", "fadvise"):
        add("npy np.load -> GPU", "cuda", 1, "latency", cache,
            lambda: [torch.from_numpy(np.load(p)).to(dev) for p in npys], npy_mib)
        add("store get nvjpeg", "cuda", 1, "latency", cache, lambda: [store.get(v, device=dev) for v in ids],
            store_mib)
        add(f"store get_many nvjpeg ({gb} clips/call)", "cuda", workers[-1], "batch", cache,
            lambda: [store.get_many(b, device=dev, workers=workers[-1]) for b in batches], store_mib)
    g0 = store.get(ids[0], device=dev).frames.cpu().numpy()
    diff = np.abs(g0.astype(np.int16) - got0)
    gpu = dict(name=torch.cuda.get_device_name(dev), max_abs_diff_vs_pil=int(diff.max()),
               mean_abs_diff_vs_pil=float(diff.mean()), equal_fraction=float((diff == 0).mean()),
               psnr_nvjpeg=float(10 * np.log10(255.0 ** 2 / np.mean((g0.astype(np.float64) - ref0) ** 2))))
    print(f"nvjpeg vs Pillow on clip 0: max |diff| {gpu['max_abs_diff_vs_pil']}, mean {gpu['mean_abs_diff_vs_pil']:.4f}, "
          f"{100 * gpu['equal_fraction']:.2f}% of bytes equal; PSNR vs the original {gpu['psnr_nvjpeg']:.2f} dB")

# ----------------------------------------------------------------------------- table
base = {(r["device"], r["cache"]): r for r in rows if r["name"].startswith("npy") and r["workers"] == 1}
print(f"\n## per {T}-frame clip ({H}x{W}), {C} clips; npy {npy_mib:.2f} MiB, store {store_mib:.2f} MiB")
print(f"{'row':44s} {'dev':>4s} {'thr':>3s} {'mode':>7s} {'cache':>7s} {'ms/clip':>8s} {'CPU ms':>7s} "
      f"{'x npy':>6s} {'file MiB/s':>10s} {'break-even MiB/s':>16s}")
for r in rows:
    ref = base.get((r["device"], r["cache"]))
    r["vs_npy"] = r["ms"] / ref["ms"] if ref else None
    r["read_mib_s"] = r["mib"] / (r["ms"] / 1e3)
    warm = base.get((r["device"], "page"))
    r["break_even_mib_s"] = None
    if warm and not r["name"].startswith("npy") and r["ms"] > warm["ms"] and r["cache"] == "page":
        r["break_even_mib_s"] = (npy_mib - r["mib"]) / ((r["ms"] - warm["ms"]) / 1e3)
    be = f"{r['break_even_mib_s']:.0f}" if r["break_even_mib_s"] else ("always" if r["cache"] == "page" and
                                                                    not r["name"].startswith("npy") else "")
    print(f"{r['name']:44s} {r['device']:>4s} {r['workers']:3d} {r['mode']:>7s} {r['cache']:>7s} {r['ms']:8.2f} "
          f"{r['cpu_ms']:7.2f} {(r['vs_npy'] or 0):6.2f} {r['read_mib_s']:10.0f} {be:>16s}")
cold = base.get(("cpu", "fadvise"))
if cold and cold["read_mib_s"] > 1500:
    print(f"note: npy after fadvise read at {cold['read_mib_s']:.0f} MiB/s: the reads did not reach a slow disk "
          "(host cache or fast NVMe); these 'fadvise' rows are not cold-disk figures")

out = dict(bench="bench_framestore", date=time.strftime("%Y-%m-%d"), machine=platform.processor() or platform.machine(),
           cpus=ncpu, device=args.device, gpu=gpu, torch=torch.__version__, pillow=Image.__version__,
           clips=C, frames=T, height=H, width=W, quality=args.quality, repeats=R, workers=workers, smoke=args.smoke,
           npy_mib=npy_mib, store_mib=store_mib, pillow_split=split, ratio=npy_mib / store_mib, psnr=psnr, loadavg_start=load0,
           loadavg_end=os.getloadavg(), rows=rows, wall_s=time.time() - t0)
atomic_write_json(args.out, out)
print(f"\nwrote {args.out} ({time.time() - t0:.0f} s)")

"""`vsr1 clip RESULT --out FILE`: cut a library moment to a new mp4 with PyAV (no system ffmpeg).

    vsr1 clip 1048577 --out moment.mp4            # a result id from `vsr1 search`
    vsr1 clip /videos/a.mp4@12.5-20 --out a.mp4   # or FILE@START-END (seconds; a file of the library)

The frames shown in [start, end) of the source are re-encoded to H.264 (yuv420p, the source's frame
rate, even width/height); the video stream only. The file appears atomically.
"""
from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

from videosearch_r1.library.build import LibraryError
from videosearch_r1.library.search import open_library
from videosearch_r1.library.store import LibraryStore, StoreError


def resolve_result(store: LibraryStore, result: str) -> tuple[str, float, float]:
    """A result id (integer) or FILE@START-END -> (path, start, end); the file must be in the library."""
    if result.strip().lstrip("-").isdigit():
        hit = store.moment(int(result))
        if hit is None:
            raise LibraryError(f"no moment with id {result} in the library (ids come from `vsr1 search`)")
        return hit.path, hit.start, hit.end
    path, sep, span = result.rpartition("@")
    try:
        start, end = (float(x) for x in span.split("-", 1))
    except ValueError:
        raise LibraryError(f"{result!r}: expected a result id or FILE@START-END (seconds)") from None
    if not sep or not 0 <= start < end:
        raise LibraryError(f"{result!r}: expected FILE@START-END with 0 <= START < END")
    real = str(Path(path).expanduser().resolve())
    if real not in store.files():
        raise LibraryError(f"{path}: not a file of the library (`vsr1 library status`)")
    return real, start, end


def cut(src: str, start: float, end: float, out: str | Path) -> dict:
    """Re-encode the frames shown in [start, end) of `src` to an H.264 mp4 at `out` (atomic)."""
    import av

    from videosearch_r1.utils import atomic_path

    out = Path(out)
    n = 0
    with av.open(src) as inp, atomic_path(out) as tmp:
        ist = inp.streams.video[0]
        rate = Fraction(ist.average_rate or 25)
        t0 = float(ist.start_time * ist.time_base) if ist.start_time is not None else 0.0
        inp.seek(int(max(0.0, start + t0) / ist.time_base), stream=ist, backward=True)
        with av.open(str(tmp), mode="w", format="mp4") as dst:
            ost = dst.add_stream("libx264", rate=rate)
            ost.width, ost.height, ost.pix_fmt = ist.codec_context.width // 2 * 2, ist.codec_context.height // 2 * 2, "yuv420p"
            for frame in inp.decode(ist):
                t = float(frame.pts * ist.time_base) - t0 if frame.pts is not None else None
                if t is None or t < start - 1e-6:
                    continue
                if t >= end - 1e-6:
                    break
                img = frame.reformat(width=ost.width, height=ost.height, format="yuv420p")
                img.pts, img.time_base = n, Fraction(1) / rate  # frame n of the clip at the source rate
                dst.mux(ost.encode(img))
                n += 1
            dst.mux(ost.encode(None))
        if n == 0:
            raise LibraryError(f"{src}: no frames in [{start}, {end}) s")
    return {"file": src, "start": start, "end": end, "out": str(out), "frames": n}



def main(argv: list[str] | None = None) -> int:
    """`vsr1 clip`."""
    from videosearch_r1.utils import command_parser, config_from_args, parse_command

    p = command_parser("vsr1 clip", __doc__)
    p.add_argument("result", help="a result id from `vsr1 search`, or FILE@START-END")
    p.add_argument("--out", required=True, help="the new mp4 file")
    args = parse_command(p, argv)
    cfg = config_from_args(args)
    try:
        store = open_library(cfg)
        try:
            path, start, end = resolve_result(store, args.result)
        finally:
            store.close()
        info = cut(path, start, end, args.out)
    except (LibraryError, StoreError) as e:
        print(f"clip: {e}", file=sys.stderr)
        return 2
    print(f"clip: {info['frames']} frames of {info['file']} [{start:.2f}, {end:.2f}] s -> {info['out']}")
    return 0

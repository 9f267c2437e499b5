"""The video front door (PyAV decode with true timestamps, Qwen3-VL frame sizes) and the compact frame store."""
from videosearch_r1.video.decode import (Clip, VideoError, VideoInfo, decode, fingerprint, frame_size, load_clip,
                                         probe, sample_times)
from videosearch_r1.video.framestore import FrameStore, StoreMismatchError

__all__ = ["Clip", "FrameStore", "StoreMismatchError", "VideoError", "VideoInfo", "decode", "fingerprint",
           "frame_size", "load_clip", "probe", "sample_times"]

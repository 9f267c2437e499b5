"""The verification turn's fast prefill (agent/prefill.py) and visual-token cache (agent/vision_cache.py) on a
tiny Qwen3-VL: the bucketed prefill equals HF's one padded forward (hidden states, logits, K/V, greedy ids) on
a batch of unequal prompts with videos; a cached video's tokens equal a fresh encoding; other video settings
or changed weights miss.

    .venv/bin/python -m pytest -q tests/test_prefill.py
"""
import pytest
import torch

from videosearch_r1.agent.decode import prefill
from videosearch_r1.agent.prefill import PrefillPlan, bucketed_prefill, buckets, duplicate_rows, video_rows
from videosearch_r1.agent.policy import Policy
from videosearch_r1.agent.vision_cache import VisionCache, clip_keys
from videosearch_r1.config import VideoConfig
from videosearch_r1.models.qwen3vl import configure_processor, encode_videos, fast_video_inputs, video_kwargs
from videosearch_r1.models.tiny import make_tiny_checkpoint

from _policy_inputs import CLIPS, QUERIES, liven, make_clip  # noqa: E402

VCFG = VideoConfig(fps=1.0, max_frames=8, min_pixels=32 * 32, max_pixels=64 * 64)
BATCH_Q = QUERIES + ["a small green star jumps twice", QUERIES[0]]
BATCH_C = CLIPS + [CLIPS[0], CLIPS[0]]  # unequal lengths; clip 0 shown to three queries


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp("policy"), kind="policy", video_cfg=VCFG)
    return liven(Policy.from_pretrained(ckpt))


def _close(a, b, tol=1e-4):
    return (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


def test_buckets_group_equal_lengths_under_a_token_budget():
    assert buckets([5, 9, 5, 9, 9, 3], max_tokens=18) == [[1, 3], [4], [0, 2], [5]]
    assert buckets([10, 9, 4], max_tokens=100, pad_slack=0.1) == [[0, 1], [2]]
    assert buckets([50], max_tokens=8) == [[0]]  # a longer row is its own bucket


@pytest.mark.parametrize("max_tokens,slack,dedup", [(10 ** 6, 0.0, True), (1, 0.0, True), (10 ** 6, 0.5, False)])
def test_bucketed_prefill_equals_hf_forward(policy, max_tokens, slack, dedup):
    inputs = policy.build_inputs(BATCH_Q, BATCH_C)
    mask = inputs["attention_mask"]
    assert len(set(mask.sum(1).tolist())) >= 3 and not bool(mask.all())  # really unequal, padded
    assert video_rows(policy.model, inputs) == [0, 1, 2, 3, 4]
    keys = clip_keys(BATCH_C, policy.processor)
    last = [mask.shape[1] - 1] * len(BATCH_C)
    assert duplicate_rows(inputs, [0, 1, 2, 3, 4], keys, last) == {4: 0}  # row 4 = row 0: prefilled once
    assert duplicate_rows(inputs, [0, 1, 2, 3, 4], None, last) == {}  # videos not comparable without keys
    pos = policy.positions(inputs)
    length = mask.shape[1]
    gather = mask.sum(1) * 0 + length - 2  # a column that is not the last one
    plan = PrefillPlan(max_tokens=max_tokens, pad_slack=slack, cache=VisionCache(1 << 30), video_keys=keys,
                       dedup_rows=dedup)
    with torch.no_grad():
        ref = prefill(policy.model, inputs, pos, gather_at=gather, capacity=length + 8, want_pre=True)
        new = bucketed_prefill(policy.model, inputs, pos, length + 8, plan, gather_at=gather, want_pre=True)
        assert _close(new.post, ref.post) and _close(new.pre, ref.pre)
        assert _close(policy.model.lm_head(new.post), policy.model.lm_head(ref.post))
    assert torch.equal(new.cache.valid, ref.cache.valid) and new.cache.length == ref.cache.length
    assert new.cache.capacity == ref.cache.capacity
    for a, b in zip(new.cache.keys + new.cache.values, ref.cache.keys + ref.cache.values):
        assert _close(a, b)
    assert plan.cache.stats()["misses"] == 3 and plan.cache.stats()["hits"] == 2


def test_generate_ids_equal_old_path(policy):
    """The greedy verification turn (what `vsr1 infer` runs) gives the same ids as the one-forward prefill."""
    assert policy.prefill_plan is not None  # the default
    new = policy.generate(BATCH_Q, BATCH_C, max_new_tokens=16, ignore_eos=True)
    hits = policy.vision_cache.hits
    again = policy.generate(BATCH_Q, BATCH_C, max_new_tokens=16, ignore_eos=True)
    assert policy.vision_cache.hits == hits + len(BATCH_C)  # every video of the second call served from cache
    policy.set_prefill(0)
    try:
        old = policy.generate(BATCH_Q, BATCH_C, max_new_tokens=16, ignore_eos=True)
    finally:
        policy.set_prefill()
    assert new.ids == old.ids == again.ids and len({tuple(r) for r in old.ids}) >= 3


def test_cached_tokens_equal_fresh_encoding_and_other_settings_miss(policy):
    model = policy.model
    inputs = policy.build_inputs(BATCH_Q, BATCH_C)
    pix, grid = inputs["pixel_values_videos"], inputs["video_grid_thw"]
    cache = VisionCache(1 << 30)
    keys = clip_keys(BATCH_C, policy.processor)
    with torch.no_grad():
        first = cache.features(model, pix, grid, keys)
        second = cache.features(model, pix, grid, keys)
        alone = policy.build_inputs(QUERIES[:1], CLIPS[:1])
        fresh = encode_videos(model, alone["pixel_values_videos"], alone["video_grid_thw"])[0]
    assert cache.stats()["misses"] == 3 and cache.stats()["hits"] == 7
    for feat in (first[3], first[4], second[0]):  # a hit is bit-for-bit what the miss stored
        assert torch.equal(feat[0], first[0][0]) and len(feat[1]) == len(first[0][1]) >= 1
        assert all(torch.equal(a, b) for a, b in zip(feat[1], first[0][1]))
    # the miss (encoded with the batch's other misses in one call) equals a fresh encoding of the video alone
    assert _close(first[0][0], fresh[0]) and len(first[0][1]) == len(fresh[1])
    assert all(_close(a, b) for a, b in zip(first[0][1], fresh[1]))
    # another video budget: other frames (another key) and other processor settings are misses
    small = make_clip(4, 32, 32, 0)
    assert clip_keys([small])[0] != clip_keys(CLIPS[:1])[0]
    saved = policy.processor.video_processor.to_dict()
    configure_processor(policy.processor, VideoConfig(fps=1.0, max_frames=4, min_pixels=32 * 32, max_pixels=32 * 64))
    try:
        other = clip_keys(CLIPS[:1], policy.processor)
    finally:
        for k in ("size", "max_video_tokens"):
            setattr(policy.processor.video_processor, k, saved[k])
    assert other != clip_keys(CLIPS[:1], policy.processor) == keys[:1]
    with torch.no_grad():
        cache.features(model, alone["pixel_values_videos"], alone["video_grid_thw"], other)
    assert cache.stats()["misses"] == 4
    # new vision weights (an optimizer step): the cache empties, the next lookup is a miss
    p = next(model.model.visual.parameters())
    with torch.no_grad():
        p.add_(0.0)
        cache.features(model, alone["pixel_values_videos"], alone["video_grid_thw"], keys[:1])
    assert cache.stats()["misses"] == 5 and cache.stats()["resets"] == 1
    p.data = p.data.clone()  # replaced storage (a move / load with assign), same values: still a miss
    with torch.no_grad():
        cache.features(model, alone["pixel_values_videos"], alone["video_grid_thw"], keys[:1])
    assert cache.stats()["misses"] == 6 and cache.stats()["resets"] == 2


def test_cache_is_bounded_by_bytes(policy):
    inputs = policy.build_inputs(QUERIES, CLIPS)
    keys = clip_keys(CLIPS, policy.processor)
    with torch.no_grad():
        feats = VisionCache(1 << 30).features(policy.model, inputs["pixel_values_videos"],
                                              inputs["video_grid_thw"], keys)
        one = sum(t.numel() * t.element_size() for t in (feats[0][0], *feats[0][1]))
        cache = VisionCache(one)  # room for clip 0's entry only
        cache.features(policy.model, inputs["pixel_values_videos"], inputs["video_grid_thw"], keys)
    s = cache.stats()
    assert s["bytes"] <= one and s["misses"] == 3 and s["evictions"] >= 1 and s["entries"] < 3
    with pytest.raises(ValueError, match="3 videos"):
        cache.features(policy.model, inputs["pixel_values_videos"], inputs["video_grid_thw"], keys[:2])


def test_fast_video_inputs_equal_the_processor(policy):
    """build_inputs makes the video pixels itself (on the policy's device, no CPU processor): same batch,
    also for odd frame counts and other aspect ratios; a clip the processor would resize takes its path."""
    clips = BATCH_C + [make_clip(3, 64, 32, 5)]
    texts = policy.prompt_texts(BATCH_Q + ["grey"], clips)
    policy.processor.tokenizer.padding_side = "left"
    ref = policy.processor(text=texts, **video_kwargs(clips), padding=True, return_tensors="pt")
    new = fast_video_inputs(policy.processor, texts, clips, "cpu")
    assert set(new) == set(ref)
    for k in ref:
        assert torch.equal(new[k], ref[k]), k
    big = make_clip(2, 128, 128, 6)  # above max_pixels: the processor would shrink it
    assert fast_video_inputs(policy.processor, policy.prompt_texts(["x"], [big]), [big], "cpu") is None
    with pytest.raises(ValueError, match="placeholders"):
        fast_video_inputs(policy.processor, texts[:2], clips[:3], "cpu")


def _duplicate_rows_loop(inputs, owner, keys, gather):
    """The per-token Python loop duplicate_rows replaced (the reference its vectorised form must equal)."""
    ids, mask = inputs["input_ids"].tolist(), inputs["attention_mask"].bool().tolist()
    videos: dict = {}
    for v, r in enumerate(owner):
        videos.setdefault(r, []).append(None if keys is None else keys[v])
    seen, out = {}, {}
    for r, (row, m) in enumerate(zip(ids, mask)):
        vk = tuple(videos.get(r, ()))
        if None in vk:
            continue
        sig = (tuple(t for t, keep in zip(row, m) if keep), vk, gather[r])
        if sig in seen:
            out[r] = seen[sig]
        else:
            seen[sig] = r
    return out


def test_duplicate_rows_equal_the_python_loop():
    """Random left-padded batches with repeated rows, rows of 0-2 videos, shared / missing keys and gather
    columns: the vectorised duplicate_rows gives the loop's dict (same pairs, same order)."""
    g = torch.Generator().manual_seed(0)
    found = 0
    for trial in range(60):
        b, width = 1 + trial % 9, 6
        base = torch.randint(0, 4, (3, width), generator=g)
        lens = torch.randint(1, width + 1, (3,), generator=g)
        pick = torch.randint(0, 3, (b,), generator=g).tolist()  # rows drawn from 3 prompts: many repeats
        ids = torch.stack([base[p] for p in pick])
        mask = torch.stack([(torch.arange(width) >= width - lens[p]).long() for p in pick])
        ids = ids.masked_fill(~mask.bool(), int(torch.randint(0, 4, (1,), generator=g)))  # pad id may equal a real id
        owner = [r for r in range(b) for _ in range([0, 1, 2][pick[r]] if trial % 2 else pick[r] % 2)]
        keys = [f"k{(o + trial) % 2}" for o in owner]
        if trial % 5 == 0 and keys:
            keys[0] = None  # a video without a key: its row is never matched
        gather = [width - 1 - (r % 2 if trial % 3 == 0 else 0) for r in range(b)]
        inputs = {"input_ids": ids, "attention_mask": mask}
        for k in (keys, None):
            want = _duplicate_rows_loop(inputs, owner, k, gather)
            got = duplicate_rows(inputs, owner, k, torch.tensor(gather))
            assert list(got.items()) == list(want.items()), (trial, k)
            found += len(want)
    assert found > 50  # the cases really had duplicates


def test_prefill_into_a_used_cache_equals_a_fresh_one(policy):
    """decode.prefill(into=) (pooled_prefill's path, now through decode.static_cache) rewrites a cache a longer
    batch used before: the same key mask, K/V and zeros beyond the prompt as a new cache."""
    from videosearch_r1.agent.decode import DecodeCache

    long_in = policy.build_inputs(BATCH_Q[:3], CLIPS)
    short_in = policy.build_inputs(QUERIES[2:] * 3, [CLIPS[2], CLIPS[2], CLIPS[1]])
    assert long_in["input_ids"].shape[1] > short_in["input_ids"].shape[1]
    with torch.no_grad():
        used = prefill(policy.model, long_in, policy.positions(long_in), capacity=1024).cache
        again = prefill(policy.model, short_in, policy.positions(short_in), capacity=1024, into=used).cache
        fresh = prefill(policy.model, short_in, policy.positions(short_in), capacity=1024).cache
    assert again is used and again.length == fresh.length and torch.equal(again.valid, fresh.valid)
    for a, b in zip(again.keys + again.values, fresh.keys + fresh.values):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="needs 3 x"), torch.no_grad():
        prefill(policy.model, short_in, policy.positions(short_in), into=DecodeCache.empty(policy.model, 3, 4))


def test_cache_misses_are_encoded_in_one_vision_call(policy, monkeypatch):
    """The distinct missing videos of a batch go through the vision tower together (one get_video_features
    call, not one per video); each video's tokens equal its encoding alone within float tolerance."""
    model = policy.model
    inputs = policy.build_inputs(BATCH_Q, BATCH_C)  # 5 videos, 3 distinct
    keys = clip_keys(BATCH_C, policy.processor)
    with torch.no_grad():
        alone = [encode_videos(model, **{k: v for k, v in policy.build_inputs(QUERIES[:1], [c]).items()
                                         if k in ("pixel_values_videos", "video_grid_thw")})[0] for c in BATCH_C]
    real = model.model.get_video_features
    calls = []
    monkeypatch.setattr(model.model, "get_video_features",
                        lambda pix, grid, **kw: calls.append(len(grid)) or real(pix, grid, **kw))
    cache = VisionCache(1 << 30)
    with torch.no_grad():
        feats = cache.features(model, inputs["pixel_values_videos"], inputs["video_grid_thw"], keys)
        assert calls == [3] and cache.stats()["misses"] == 3 and cache.stats()["hits"] == 2
        again = cache.features(model, inputs["pixel_values_videos"], inputs["video_grid_thw"], keys)
        assert calls == [3]  # all hits: no vision call
        part = cache.features(model, inputs["pixel_values_videos"][:0], inputs["video_grid_thw"][:0], [])
    assert part == []
    for feat, ref, hit in zip(feats, alone, again):
        assert _close(feat[0], ref[0]) and len(feat[1]) == len(ref[1]) >= 1
        assert all(_close(a, b) for a, b in zip(feat[1], ref[1]))
        assert hit is feat or torch.equal(hit[0], feat[0])
    for emb, deep in cache.entries.values():  # each stored entry owns its memory (no view of the batch output)
        for t in (emb, *deep):
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size()
    assert cache.stats()["bytes"] == sum(t.untyped_storage().nbytes() for e, d in cache.entries.values()
                                         for t in (e, *d))

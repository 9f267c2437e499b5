"""The agent loop on the tiny synthetic world: scripted policy outputs drive every stop reason; real
engine, real videos, real tiny policy (tokenizer, SQR rollout) and real embedder everywhere else."""
import dataclasses
import shutil

import numpy as np
import pytest

import _world as W
from videosearch_r1.agent.loop import AgentLoop


class SpyEngine:
    """The real engine, recording what the loop asks of it."""

    def __init__(self, eng):
        self.eng, self.ids = eng, eng.ids
        self.refined, self.searched, self.embedded = [], [], []

    def embed_queries(self, texts):
        out = self.eng.embed_queries(texts)
        self.embedded.append(list(texts))
        return out

    def embed_refined(self, texts, soft):
        out = self.eng.embed_refined(texts, soft)
        self.refined.append((list(texts), np.array(soft), out))
        return out

    def search(self, qvecs, k=1, exclude=None, **kw):
        self.searched.append((np.array(qvecs), k))
        return self.eng.search(qvecs, k=k, exclude=exclude, **kw)

    def rank_of(self, qvecs, targets):
        return self.eng.rank_of(qvecs, targets)


def _loop(*overrides, engine=None, policy=None, clip_fn=None, ranked_k=0):
    cfg = W.world().cfg(*overrides)
    sp = W.split()
    return AgentLoop(cfg.agent, engine or W.engine(), policy, clip_fn=clip_fn or W.clip_fn(cfg),
                     durations={v: r.duration for v, r in sp.videos.items()}, ranked_k=ranked_k)


def _videos(traj):
    return [t.video for t in traj.turns]


def test_engine_baseline_answers_top1_with_whole_video():
    sp, eng = W.split(), W.engine()
    loop = _loop("agent.method=engine")
    trajs = loop.run(sp.queries)
    qv = eng.embed_queries([q.text for q in sp.queries])
    top1 = [ids[0] for ids in eng.search(qv, k=1).ids]
    ranks = eng.rank_of(qv, [q.video_id for q in sp.queries])
    for traj, q, top, rank in zip(trajs, sp.queries, top1, ranks):
        row = traj.to_row()
        assert row["stop_reason"] == "engine_only" and len(row["turns"]) == 1
        assert row["final"] == {"video": top, "answer": "matched", "start": 0.0, "end": sp.videos[top].duration}
        assert row["text_tokens"] == 0 and row["latent_tokens"] == 0
        assert row["turns"][0]["rank_before"] == rank and row["orig_rank"] == rank
        assert (row["turns"][0]["iou"] is not None) == (top == q.video_id)


def test_every_stop_reason_and_no_video_twice():
    """One batch: matched at once (span clamped), malformed, matched at turn 3, exhausted; then max_turns."""
    sp = W.split()
    qs = sp.queries[:4]
    n_videos = len(sp.videos)
    pol = W.policy()
    script = {qs[0].text: lambda k: W.MATCH.format(s="-2.0", e="999.0"),
              qs[1].text: lambda k: W.GARBAGE,
              qs[2].text: lambda k: W.MATCH.format(s="1.0", e="2.5") if k == 2 else W.NOT_MATCH,
              qs[3].text: lambda k: W.NOT_MATCH}
    calls = W.scripted(pol, lambda q, v, k: script[q](k))
    loop = _loop(f"agent.max_turns={n_videos + 1}", policy=pol)
    trajs = loop.run(qs)
    reasons = [t.stop_reason for t in trajs]
    assert reasons == ["matched", "malformed", "matched", "exhausted"]
    a = trajs[0].turns[0]
    dur = sp.videos[a.video].duration
    assert a.span == [0.0, dur] and trajs[0].final()["start"] == 0.0  # clamped to [0, duration]
    b = trajs[1].turns[0]
    assert b.answer is None and not b.parse_ok and "missing <answer>" in b.parse_error
    assert len(trajs[2].turns) == 3 and trajs[2].final()["end"] == 2.5
    assert [t.refined for t in trajs[2].turns] == [True, True, False]
    assert sorted(_videos(trajs[3])) == sorted(sp.videos)  # every video exactly once, then nothing left
    for t in trajs:
        assert len(set(_videos(t))) == len(_videos(t))
    # one generate call per turn, for exactly the queries still active at that turn
    per_turn = [sum(len(t.turns) >= i for t in trajs) for i in range(1, n_videos + 1)]
    assert [b for b, _ in calls] == per_turn and all(m == "sqr" for _, m in calls)

    pol2 = W.policy()
    W.scripted(pol2, lambda q, v, k: W.NOT_MATCH)
    trajs = _loop("agent.max_turns=2", policy=pol2).run(qs)
    assert all(t.stop_reason == "max_turns" and len(t.turns) == 2 for t in trajs)
    assert all(t.turns[-1].rank_after is not None for t in trajs)  # the last turn refines too (logged)


def test_video_error_stops_only_that_query(tmp_path):
    sp, eng = W.split(), W.engine()
    cfg0 = W.world().cfg()
    src = cfg0.dataset_root("synth") / "videos"
    bad_root = tmp_path / "raw"
    (bad_root / "videos").mkdir(parents=True)
    qs = sp.queries[:6]
    top1 = [ids[0] for ids in eng.search(eng.embed_queries([q.text for q in qs]), k=1).ids]
    bad = top1[0]
    for f in src.iterdir():
        (bad_root / "videos" / f.name).symlink_to(f)
    (bad_root / "videos" / f"{bad}.mp4").unlink()
    shutil.copyfile(src / f"{bad}.mp4", bad_root / "videos" / f"{bad}.mp4")
    with open(bad_root / "videos" / f"{bad}.mp4", "r+b") as f:
        f.truncate(300)  # a real, truncated mp4
    cfg = W.world().cfg(f"datasets.synth.root={bad_root}")
    pol = W.policy()
    W.scripted(pol, lambda q, v, k: W.MATCH.format(s="1.0", e="2.0"))
    loop = _loop("agent.max_turns=2", policy=pol, clip_fn=W.clip_fn(cfg))
    trajs = loop.run(qs)
    for t, top in zip(trajs, top1):
        assert t.stop_reason == ("video_error" if top == bad else "matched")
    assert "video error" in trajs[0].turns[0].parse_error
    assert loop.counts["video_errors"] == sum(top == bad for top in top1)


@pytest.mark.parametrize("no_refine", [False, True])
def test_zeroshot_and_refine_less_turns_walk_the_original_ranking(no_refine):
    """zeroshot (and an SQR not_matched without <REFINE>) shows the original query's ranking in order."""
    sp, eng = W.split(), W.engine()
    qs = sp.queries[:3]
    pol = W.policy()
    W.scripted(pol, lambda q, v, k: W.NOT_MATCH_NO_REFINE if no_refine else W.NOT_MATCH)
    spy = SpyEngine(eng)
    method = "sqr" if no_refine else "zeroshot"
    trajs = _loop(f"agent.method={method}", "agent.max_turns=3", engine=spy, policy=pol).run(qs)
    expect = eng.search(eng.embed_queries([q.text for q in qs]), k=3).ids
    assert [_videos(t) for t in trajs] == expect
    assert spy.refined == []
    assert all(t.latent_tokens == 0 and not any(tr.refined for tr in t.turns) for t in trajs)


def test_scope_confines_every_search_to_the_querys_sub_corpus():
    """loop.scope (GRPO's grpo.corpus_size): every video shown and ranked comes from the query's scope, in the
    order of the original query's ranking within it (zeroshot)."""
    sp, eng = W.split(), W.engine()
    qs = sp.queries[:3]
    pol = W.policy()
    W.scripted(pol, lambda q, v, k: W.NOT_MATCH)
    qv = eng.embed_queries([q.text for q in qs])
    scopes = {q.qid: frozenset([q.video_id] + eng.search(qv[i:i + 1], k=6).ids[0][3:6]) for i, q in enumerate(qs)}
    loop = _loop("agent.method=zeroshot", "agent.max_turns=3", policy=pol, ranked_k=4)
    loop.scope = lambda q: scopes[q.qid]
    trajs = loop.run(qs)
    for i, (q, t) in enumerate(zip(qs, trajs)):
        assert set(_videos(t)) <= scopes[q.qid] and len(t.turns) == 3
        assert _videos(t) == eng.search(qv[i:i + 1], k=3, scope=[scopes[q.qid]]).ids[0]
        assert {c[0] for c in t.candidates} <= scopes[q.qid]


def _refine_run(mode, kv_cache=True, turns=3):
    sp = W.split()
    pol = W.policy()
    W.scripted(pol, lambda q, v, k: W.NOT_MATCH)
    spy = SpyEngine(W.engine())
    trajs = _loop(f"agent.refine_mode={mode}", f"agent.max_turns={turns}", f"agent.kv_cache={kv_cache}",
                  engine=spy, policy=pol).run(sp.queries[:1])
    return trajs[0], spy


def test_replace_vs_accumulate():
    q = W.split().queries[0]
    rep, spy_r = _refine_run("replace")
    acc, spy_a = _refine_run("accumulate")
    n = 8
    # replace: the original text + this turn's N latents; accumulate: + all turns' latents in order
    assert [s.shape[1] for _, s, _ in spy_r.refined] == [n, n, n]
    assert [s.shape[1] for _, s, _ in spy_a.refined] == [n, 2 * n, 3 * n]
    assert all(texts == [q.text] for texts, _, _ in spy_r.refined + spy_a.refined)
    for t in range(1, 3):
        np.testing.assert_array_equal(spy_a.refined[t][1][:, : t * n], spy_a.refined[t - 1][1])
    np.testing.assert_array_equal(spy_a.refined[0][1], spy_r.refined[0][1])  # turn 1 is the same
    assert not np.allclose(spy_a.refined[1][2], spy_r.refined[1][2])  # turn 2 differs as designed
    # the refined vector of turn t is what turn t+1 searches with
    for spy in (spy_r, spy_a):
        for t in range(2):
            np.testing.assert_array_equal(spy.searched[t + 1][0][0], spy.refined[t][2][0])
    assert [tr.soft_tokens for tr in rep.turns] == [n, n, n]
    assert [tr.soft_tokens for tr in acc.turns] == [n, 2 * n, 3 * n]
    assert rep.latent_tokens == acc.latent_tokens == 3 * n  # latents generated, not re-fed


def test_uncached_rollout_matches_cached():
    """agent.kv_cache=false (the authors' full forward per latent) gives the same refined queries."""
    a, spy_a = _refine_run("replace", kv_cache=True, turns=2)
    b, spy_b = _refine_run("replace", kv_cache=False, turns=2)
    assert _videos(a) == _videos(b) and len(spy_a.refined) == len(spy_b.refined) == 2
    for (_, sa, va), (_, sb, vb) in zip(spy_a.refined, spy_b.refined):
        np.testing.assert_allclose(sa, sb, atol=1e-4)
        np.testing.assert_allclose(va, vb, atol=1e-4)


def test_rollout_from_generation_cache_matches_fresh_forward():
    """Outputs forced through the real generate (the rollout continues from its KV cache) give the same
    refined queries as the same outputs fed back as text (a fresh prefill of prompt + output)."""
    qs = W.split().queries[:3]
    runs = []
    for patch in (W.forced, W.scripted):
        pol = W.policy()
        patch(pol, lambda q, v, k: W.NOT_MATCH)
        spy = SpyEngine(W.engine())
        runs.append((_loop("agent.max_turns=2", engine=spy, policy=pol).run(qs), spy))
    (ta, sa), (tb, sb) = runs
    assert [_videos(t) for t in ta] == [_videos(t) for t in tb]
    assert [t.text_tokens for t in ta] == [t.text_tokens for t in tb] and ta[0].turns[0].output == W.NOT_MATCH
    assert len(sa.refined) == len(sb.refined) == 2
    for (_, xa, va), (_, xb, vb) in zip(sa.refined, sb.refined):
        assert np.abs(xa).max() > 0.1  # real (non-zero) latents
        np.testing.assert_allclose(xa, xb, atol=1e-4)
        np.testing.assert_allclose(va, vb, atol=1e-4)


@pytest.mark.parametrize("mode", ["replace", "accumulate"])
def test_hqr_rewrites_are_embedded_as_text(mode):
    sp = W.split()
    q = sp.queries[0]
    pol = W.policy()
    calls = W.scripted(pol, lambda qq, v, k: W.HQR_NOT_MATCH.format(q=f"red ring {k}"))
    spy = SpyEngine(W.engine())
    traj = _loop("agent.method=hqr", f"agent.refine_mode={mode}", "agent.max_turns=3", engine=spy,
                 policy=pol).run([q])[0]
    assert all(m == "hqr" for _, m in calls)
    if mode == "replace":
        assert spy.embedded[1:] == [[f"{q.text} red ring 0"], [f"{q.text} red ring 1"], [f"{q.text} red ring 2"]]
    else:
        assert spy.embedded[2] == [f"{q.text} red ring 0 red ring 1"]
    tok = pol.processor.tokenizer
    for k, tr in enumerate(traj.turns):
        assert tr.refined and tr.rewritten_query == f"red ring {k}"
        assert tr.refine_tokens == len(tok(f"red ring {k}", add_special_tokens=False)["input_ids"])
        assert tr.text_tokens == len(tok(tr.output, add_special_tokens=False)["input_ids"]) > tr.refine_tokens
    assert traj.latent_tokens == 0 and spy.refined == []


def test_ground_truth_never_steers_the_loop():
    """Same queries with a different (wrong) ground truth: identical decisions, only logged ranks move."""
    sp = W.split()
    qs = sp.queries[:4]
    other = sorted(sp.videos)
    fake = [dataclasses.replace(q, video_id=other[(other.index(q.video_id) + 1) % len(other)], start=0.0, end=1.0)
            for q in qs]
    runs = []
    for batch in (qs, fake):
        pol = W.policy()
        W.scripted(pol, lambda q, v, k: W.MATCH.format(s="1.0", e="3.0") if k == 2 else W.NOT_MATCH)
        runs.append(_loop("agent.max_turns=3", "agent.profile_depths=[1,2,4,8]", policy=pol).run(batch))
    key = lambda t: (t.stop_reason, [(x.video, x.output, x.answer, x.span, x.refined) for x in t.turns])  # noqa: E731
    assert [key(t) for t in runs[0]] == [key(t) for t in runs[1]]
    assert [t.orig_rank for t in runs[0]] != [t.orig_rank for t in runs[1]]


def test_oracle_verifier_decides_by_the_truth_and_keeps_the_policys_verdict():
    """agent.oracle_verifier: a policy that always answers not_matched (with <REFINE>) stops `matched` on the
    turn its GT video is shown, its own verdict kept as policy_answer; with zeroshot it walks the original
    ranking until the GT; the same policy without the oracle never stops matched. No method=engine."""
    sp, eng = W.split(), W.engine()
    qs = sp.queries[:4]
    pol = W.policy()
    W.scripted(pol, lambda q, v, k: W.NOT_MATCH)
    trajs = _loop("agent.method=zeroshot", "agent.max_turns=3", "agent.oracle_verifier=true", policy=pol).run(qs)
    ranked = eng.search(eng.embed_queries([q.text for q in qs]), k=3).ids
    for q, t, order in zip(qs, trajs, ranked):
        upto = order.index(q.video_id) + 1 if q.video_id in order else 3
        assert _videos(t) == order[:upto]
        assert [tr.answer for tr in t.turns] == ["not_matched"] * (upto - 1) + [
            "matched" if q.video_id in order else "not_matched"]
        assert all(tr.policy_answer == "not_matched" for tr in t.turns)
        assert t.stop_reason == ("matched" if q.video_id in order else "max_turns")
    assert any(t.stop_reason == "matched" for t in trajs)
    plain = _loop("agent.method=zeroshot", "agent.max_turns=3", policy=pol).run(qs)
    assert all(t.stop_reason == "max_turns" and all(tr.policy_answer is None for tr in t.turns) for t in plain)
    sqr = _loop("agent.method=sqr", "agent.max_turns=3", "agent.oracle_verifier=true", policy=pol).run(qs)
    assert all(t.turns[-1].answer == ("matched" if t.turns[-1].gt_shown else "not_matched") for t in sqr)
    assert any(tr.refined for t in sqr for tr in t.turns)  # not_matched turns still refine by SQR
    with pytest.raises(ValueError, match="oracle_verifier"):
        _loop("agent.method=engine", "agent.oracle_verifier=true")


def test_profile_depths_and_ranked_list():
    sp = W.split()
    pol = W.policy()
    W.scripted(pol, lambda q, v, k: W.NOT_MATCH)
    spy = SpyEngine(W.engine())
    trajs = _loop("agent.max_turns=1", "agent.profile_depths=[1,2,4,8]", engine=spy, policy=pol,
                  ranked_k=5).run(sp.queries[:2])
    full = [r for r in spy.refined if r[1].shape[1] == 8]
    for i, t in enumerate(trajs):
        tr = t.turns[0]
        assert sorted(tr.rank_after_by_depth, key=int) == ["1", "2", "4", "8"]
        assert tr.rank_after_by_depth["8"] == tr.rank_after  # depth N is the refinement itself
        row = t.to_row()
        vids = [e[0] for e in row["ranked"]]
        assert len(vids) == len(set(vids)) == 6 and vids[-1] == tr.video  # the rejected video ranks last
        assert vids[:-1] == spy.eng.search(full[0][2][i:i + 1], k=5, exclude=[{tr.video}]).ids[0]

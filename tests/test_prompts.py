"""The prompt builder and the output parser: grammar round trips, each parsing rule, and a seeded fuzz."""
import math
import random

import numpy as np
import pytest

from videosearch_r1.agent.prompts import (
    HQR_SYSTEM_PROMPT, REFINE_TOKEN, SYSTEM_PROMPT, ParsedOutput, build_messages, format_seconds,
    format_target, parse_output, user_text,
)


def test_format_seconds_matches_reference_style():
    assert format_seconds(12) == "12.0"
    assert format_seconds(12.0) == "12.0"
    assert format_seconds(12.5) == "12.5"
    assert format_seconds(1 / 3) == "0.333333"
    assert format_seconds(2.0000001) == "2.0"  # rounds to 6 decimals first
    assert format_seconds(0.1 + 0.2) == "0.3"
    with pytest.raises(ValueError):
        format_seconds(float("nan"))


@pytest.mark.parametrize("answer,span", [("matched", (3.0, 9.5)), ("matched", (0, 12)),
                                         ("matched", (1.234567, 80.1)), ("not_matched", None)])
def test_target_round_trips_through_parser(answer, span):
    text = format_target("The  circle spins. ", answer, span)
    assert text.endswith(REFINE_TOKEN)
    p = parse_output(text)
    assert p.ok and p.errors == ()
    assert p.answer == answer and p.think == "The  circle spins." and p.has_refine
    if span is None:
        assert p.span is None and "<start>" not in text
    else:
        assert p.span == pytest.approx((float(span[0]), float(span[1])), abs=1e-6)


def test_hqr_target_round_trip_and_grammar():
    text = format_target("No red circle here.", "not_matched", rewritten_query="a red circle that spins twice",
                         method="hqr")
    assert REFINE_TOKEN not in text
    p = parse_output(text, grammar="hqr")
    assert p.ok and p.rewritten_query == "a red circle that spins twice" and p.answer == "not_matched"
    # the same text under the sqr grammar is not conforming: no <REFINE>, unexpected <query>
    q = parse_output(text)
    assert not q.ok and "missing <REFINE>" in q.errors and "<query> in an sqr output" in q.errors
    m = parse_output(format_target("ok", "matched", (1, 2), method="hqr"), grammar="hqr")
    assert m.ok and m.span == (1.0, 2.0)


def test_format_target_rejects_bad_input():
    with pytest.raises(ValueError):
        format_target("t", "matched")  # no span
    with pytest.raises(ValueError):
        format_target("t", "matched", (5.0, 2.0))
    with pytest.raises(ValueError):
        format_target("t", "not_matched", (1.0, 2.0))
    with pytest.raises(ValueError):
        format_target("t", "maybe", None)
    with pytest.raises(ValueError):
        format_target("t", "not_matched", method="hqr")  # no rewritten query


def test_build_messages_layout_and_chat_template():
    clip = object()
    msgs = build_messages('a "red" circle', clip)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"][0]["text"] == SYSTEM_PROMPT
    assert msgs[1]["content"][0]["text"] == 'Query: "a "red" circle"\nRetrieved video: '
    assert msgs[1]["content"][1] == {"type": "video", "video": clip}
    assert build_messages("q", clip, method="hqr")[0]["content"][0]["text"] == HQR_SYSTEM_PROMPT
    from videosearch_r1.models.tiny import build_tokenizer

    tok = build_tokenizer(refine_token=True)
    rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert user_text('a "red" circle') + "<|vision_start|><|video_pad|><|vision_end|>" in rendered
    assert rendered.endswith("<|im_start|>assistant\n")
    ids = tok(rendered)["input_ids"]  # the literal <REFINE> in the system prompt is the special token
    assert ids.count(tok.convert_tokens_to_ids(REFINE_TOKEN)) == SYSTEM_PROMPT.count(REFINE_TOKEN)


def _p(body, think="<think>r</think> ", grammar="sqr"):
    return parse_output(think + body, grammar=grammar)


def test_parser_rules():
    # the last occurrence counts, and the repeat is reported
    p = _p("<answer>not_matched</answer> <answer>matched</answer> <start>1</start> <end>2</end> <REFINE>")
    assert p.answer == "matched" and any("appears 2 times" in e for e in p.errors) and not p.ok
    # tags quoted inside the reasoning never count
    p = parse_output("<think>I could say <answer>matched</answer> <start>1</start></think> "
                     "<answer>not_matched</answer> <REFINE>")
    assert p.ok and p.answer == "not_matched" and p.start is None
    # unit suffixes and clocks
    p = _p("<answer>matched</answer> <start>12.5s</start> <end> 20 seconds </end> <REFINE>")
    assert p.ok and p.span == (12.5, 20.0)
    assert _p("<answer>matched</answer> <start>01:02.5</start> <end>1:00:00</end> <REFINE>").span == (62.5, 3600.0)
    # reversed spans: reported, not swapped
    p = _p("<answer>matched</answer> <start>9</start> <end>3</end> <REFINE>")
    assert p.span == (9.0, 3.0) and not p.ok and any("reversed" in e for e in p.errors)
    # non-finite and garbage numbers -> None
    for bad in ("inf", "nan", "1e999", "about 5", "", "5..2", "-"):
        p = _p(f"<answer>matched</answer> <start>{bad}</start> <end>4</end> <REFINE>")
        assert p.start is None and p.end == 4.0 and not p.ok, bad
    # negative kept and flagged
    p = _p("<answer>matched</answer> <start>-1</start> <end>4</end> <REFINE>")
    assert p.start == -1.0 and any("negative" in e for e in p.errors)
    # answer aliases read but flagged; unknown -> None
    p = _p("<answer> Not Matched </answer> <REFINE>")
    assert p.answer == "not_matched" and p.ok
    p = _p("<answer>mismatch</answer> <REFINE>")
    assert p.answer == "not_matched" and any("non-canonical" in e for e in p.errors)
    assert _p("<answer>perhaps</answer> <REFINE>").answer is None
    # missing pieces
    assert "missing <think>" in parse_output("<answer>not_matched</answer> <REFINE>").errors
    assert "missing <REFINE>" in _p("<answer>not_matched</answer>").errors
    assert "matched without <start> and <end>" in _p("<answer>matched</answer> <REFINE>").errors
    assert "not_matched with a span" in _p("<answer>not_matched</answer> <start>1</start> <end>2</end> <REFINE>").errors
    assert "text after <REFINE>" in _p("<answer>not_matched</answer> <REFINE> more").errors
    assert any("outside the tags" in e for e in _p("hello <answer>not_matched</answer> <REFINE>").errors)
    # truncated output: unclosed think swallows everything
    p = parse_output("<think>the circle is red and <answer>matched</answer>")
    assert p.answer is None and "unclosed <think>" in p.errors and p.think is None
    # end-of-turn tokens are ignored; case-insensitive tags
    p = parse_output("<THINK>r</THINK> <Answer>matched</Answer> <START>1</START> <END>2</END> <refine><|im_end|>")
    assert p.ok and p.span == (1.0, 2.0)
    # hqr: not_matched needs a query
    assert "not_matched without a rewritten <query>" in _p("<answer>not_matched</answer>", grammar="hqr").errors
    # non-string inputs
    assert parse_output(None).answer is None and parse_output(b"\xff\xfe<think>").errors
    assert isinstance(parse_output(12345), ParsedOutput)


_PIECES = ["<think>", "</think>", "<answer>", "</answer>", "<start>", "</start>", "<end>", "</end>",
           "<query>", "</query>", "<REFINE>", "<refine>", "matched", "not_matched", "match", " ", "\n",
           "12.5", "-3", "1e999", "nan", "inf", "s", "seconds", ":", "01:02", "<", ">", "/", "<|im_end|>",
           "é", "\x00", "\\", "(", ")", "*", "+", "?", "[", "]", "{", "}", "$", "^", "|", ".", "0"]


def _check(p, grammar):
    assert isinstance(p, ParsedOutput)
    assert p.answer in (None, "matched", "not_matched")
    for v in (p.start, p.end):
        assert v is None or (isinstance(v, float) and math.isfinite(v))
    assert isinstance(p.has_refine, bool) and isinstance(p.ok, bool)
    assert p.think is None or isinstance(p.think, str)
    assert p.rewritten_query is None or isinstance(p.rewritten_query, str)
    assert isinstance(p.errors, tuple) and all(isinstance(e, str) for e in p.errors)
    assert p.ok == (len(p.errors) == 0)
    if p.ok:  # a conforming output is fully usable
        assert p.answer is not None and p.think
        if p.answer == "matched":
            assert p.start is not None and p.end is not None and 0 <= p.start < p.end
        if grammar == "sqr":
            assert p.has_refine


def test_parser_fuzz_never_raises_and_is_typed():
    rng = random.Random(1234)
    n_ok = 0
    for i in range(6000):
        kind = i % 4
        if kind == 0:  # tag soup
            text = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 40)))
        elif kind == 1:  # random unicode
            text = "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 80)))
        elif kind == 2:  # random bytes
            text = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 80)))
        else:  # mutated valid outputs: delete / duplicate / swap slices
            span = (round(rng.uniform(0, 50), rng.randint(0, 7)), round(rng.uniform(50, 100), 3))
            answer = rng.choice(["matched", "not_matched"])
            text = format_target("why " * rng.randint(1, 3), answer, span if answer == "matched" else None)
            for _ in range(rng.randint(0, 3)):
                a, b = sorted(rng.randrange(len(text) + 1) for _ in range(2))
                op = rng.randrange(3)
                text = text[:a] + text[b:] if op == 0 else (text[:b] + text[a:b] + text[b:] if op == 1
                                                             else text[:a] + text[b:] + text[a:b])
        grammar = rng.choice(["sqr", "hqr"])
        p = parse_output(text, grammar=grammar)
        _check(p, grammar)
        n_ok += p.ok
    assert n_ok > 50  # the mutation branch keeps plenty of valid outputs: the fuzz exercises both paths


def test_parser_long_pathological_inputs():
    for text in ["<think>" * 5000, "<answer>" * 5000 + "</answer>", "<start>1" * 3000, "a" * 100000,
                 "<think></think>" * 3000 + "<answer>matched</answer>"]:
        _check(parse_output(text), "sqr")
    arr = np.frombuffer(np.random.default_rng(0).bytes(4096), dtype=np.uint8)
    _check(parse_output(arr.tobytes()), "sqr")

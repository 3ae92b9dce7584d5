"""Tests for beatrec.extract: prompt + parser, splitter, phrase cache, OpenAI-compatible and local-LM extractors."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import torch
from tiny_lm import save_tiny_lm

from beatrec.errors import ConfigError
from beatrec.extract.base import ExtractionError, ExtractorConfig, PhraseExtractor
from beatrec.extract.cache import extract_phrases, phrase_key, read_cache
from beatrec.extract.prompt import (
    PREFILL,
    budget_texts,
    build_messages,
    drop_demo_copies,
    list_is_done,
    parse_phrases,
)
from beatrec.extract.registry import make_extractor
from beatrec.extract.splitter import rank_phrases, split_phrases

# ---------------------------------------------------------------- prompt and parser


def test_parse_valid_json() -> None:
    raw = 'Sure! {"preferences": ["Cozy Mystery", "strong characters", "cozy mystery ", ""]} hope this helps'
    assert parse_phrases(raw, 5) == ["cozy mystery", "strong characters"]


def test_parse_prefilled_and_truncated() -> None:
    assert parse_phrases(PREFILL + 'fast pacing", "twist endings"]}', 5) == ["fast pacing", "twist endings"]
    # cut off mid-phrase by the token budget: the unfinished phrase is dropped
    assert parse_phrases(PREFILL + 'fast pacing", "twist endings", "witty dia', 5) == [
        "fast pacing",
        "twist endings",
    ]
    assert parse_phrases(PREFILL + 'fast pacing", "twist endings", ', 5) == ["fast pacing", "twist endings"]
    assert parse_phrases(PREFILL + 'witty dialog"', 5) == ["witty dialog"]
    assert parse_phrases(PREFILL + "1.1.1.1.1.1.1.1.1.1.1.1", 5) is None  # never closed: not a phrase


def test_parse_object_lists_bare_lists_limits() -> None:
    raw = '{"preferences": [{"name": "Plot Twists", "score": 0.9}, {"label": "good pacing"}, {"phrase": "humor"}]}'
    assert parse_phrases(raw, 5) == ["plot twists", "good pacing", "humor"]
    assert parse_phrases('["a", "b", "c"]', 2) == ["a", "b"]
    assert parse_phrases('{"keywords": ["one two three four five six seven", "ok"]}', 5) == ["ok"]


@pytest.mark.parametrize(
    "raw", ["no json here", "", '{"preferences": []}', '{"a": 1}', "[1, 2]", '{"preferences": ["", "  "]}']
)
def test_parse_garbage_is_none(raw: str) -> None:
    assert parse_phrases(raw, 5) is None


def test_list_is_done() -> None:
    assert not list_is_done('fast pacing", "twi', 5)
    assert list_is_done('fast pacing"]}', 5)
    assert list_is_done('a", "b", "c"', 3)
    assert list_is_done('life", "life",', 5)  # a repeat ends a looping generation
    assert not list_is_done('a", "b", "c', 3)


def test_drop_demo_copies() -> None:
    demo = json.loads(build_messages("user", ["x"], 5)[2]["content"])["preferences"]
    assert drop_demo_copies("user", [demo[0], "witty dialogue"], ["Witty dialogue."]) == ["witty dialogue"]
    assert drop_demo_copies("user", demo[:2], ["Nothing in common."]) is None
    supported = f"I love {demo[0]}!"  # a demonstration phrase the entity's own text supports is kept
    assert drop_demo_copies("user", [demo[0]], [supported]) == [demo[0]]
    assert drop_demo_copies("user", None, ["x"]) is None


def test_build_messages_and_budget() -> None:
    texts = ["word " * 300, "second text here"]
    msgs = build_messages("item", texts, n=3, max_words=50)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    demo = json.loads(msgs[2]["content"])["preferences"]
    assert len(demo) == 3
    assert "at most 3" in msgs[-1]["content"] and "item" in msgs[-1]["content"]
    assert "second text here" in msgs[-1]["content"]  # every text gets a share of the budget
    assert len(msgs[-1]["content"].split()) < 100
    assert "user" in build_messages("user", ["x"], 5)[-1]["content"]
    assert budget_texts(["a b c", "", "d"], 100) == ["a b c", "d"]
    with pytest.raises(ValueError):
        build_messages("shop", ["x"], 5)


# ---------------------------------------------------------------- splitter

REVIEWS = [
    "Great plot and strong characters, but the ending was rushed.",
    "Strong characters with witty dialogue; great plot!",
    "I loved the witty dialogue because it was so funny.",
]


def test_splitter_phrases_and_ranking() -> None:
    assert split_phrases(REVIEWS[0]) == ["great plot", "strong characters", "ending was rushed"]
    ranked = rank_phrases(REVIEWS, 4)
    # counts: great plot 2, strong characters 2, witty dialogue 2 (first seen in that order), then the rest
    assert ranked == ["great plot", "strong characters", "witty dialogue", "ending was rushed"]
    assert rank_phrases(REVIEWS, 4) == ranked  # deterministic
    assert rank_phrases(["The and of it."], 3) == []


def test_splitter_extractor() -> None:
    ex = make_extractor(ExtractorConfig(kind="splitter", n_phrases=2))
    assert isinstance(ex, PhraseExtractor)
    assert ex.extract("user", [REVIEWS, ["and the"]]) == [["great plot", "strong characters"], None]


# ---------------------------------------------------------------- cache


class CountingExtractor:
    """Splitter-like fake that counts what it is asked and fails on texts containing 'FAIL'."""

    identity = "fake:v1"
    n_phrases = 3

    def __init__(self) -> None:
        self.calls: list[list[list[str]]] = []

    def extract(self, kind: str, docs: list[list[str]], progress: bool = False) -> list[list[str] | None]:
        self.calls.append(docs)
        return [
            None if any("FAIL" in t for t in d) else rank_phrases(d, self.n_phrases) or ["x"] for d in docs
        ]


def test_cache_hits_misses_and_failures(tmp_path: Path) -> None:
    path = tmp_path / "phrases.jsonl"
    ents = {1: REVIEWS, 2: ["Cheap and cheerful, with fast shipping."], 3: ["FAIL"], 4: list(REVIEWS)}
    ex = CountingExtractor()
    out, st = extract_phrases(ents, "user", ex, cache_path=path)
    assert (st.n_entities, st.n_cached, st.n_extracted, st.n_failed) == (4, 0, 3, 1)
    assert set(out) == {1, 2, 4} and out[1] == out[4]
    assert sum(len(c) for c in ex.calls) == 3  # entities 1 and 4 have identical texts: extracted once
    assert len(read_cache(path)) == 2 and "Cheap" not in path.read_text()

    ex2 = CountingExtractor()
    out2, st2 = extract_phrases(ents, "user", ex2, cache_path=path)
    assert (st2.n_cached, st2.n_extracted, st2.n_failed) == (3, 0, 1)
    assert out2 == out
    assert ex2.calls == [[["FAIL"]]]  # only the failed entity is tried again

    _, st3 = extract_phrases({2: ents[2]}, "item", ex2, cache_path=path)  # kind is part of the key
    assert st3.n_extracted == 1
    assert phrase_key("a", "user", 3, ["x"]) != phrase_key("a", "user", 4, ["x"])


def test_cache_survives_a_torn_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEATREC_CACHE", str(tmp_path))
    ex = CountingExtractor()
    _, st = extract_phrases({1: REVIEWS}, "user", ex)
    path = tmp_path / "phrases" / "fake_v1.jsonl"
    assert st.n_extracted == 1 and path.is_file()
    with path.open("a") as f:
        f.write('{"key": "abc", "phras')  # an interrupted append
    _, st = extract_phrases({1: REVIEWS, 2: ["Fast shipping."]}, "user", ex)
    assert (st.n_cached, st.n_extracted) == (1, 1)
    assert len(read_cache(path)) == 2


# ---------------------------------------------------------------- OpenAI-compatible endpoint


class _Handler(BaseHTTPRequestHandler):
    replies: list[tuple[int, str]] = []
    requests: list[dict] = []
    headers_seen: list[str | None] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        type(self).headers_seen.append(self.headers.get("Authorization"))
        status, content = type(self).replies.pop(0) if type(self).replies else (200, '{"preferences": ["x"]}')
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.replies, _Handler.requests, _Handler.headers_seen = [], [], []
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_openai_extractor_with_retry(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEATREC_TEST_KEY", "sk-test")
    _Handler.replies = [
        (200, '```json\n{"preferences": ["Witty Dialogue", "great plot"]}\n```'),
        (200, "I cannot answer that."),  # malformed: retried at temperature 0.7
        (200, '{"preferences": [{"name": "fast shipping"}]}'),
    ]
    cfg = ExtractorConfig(
        kind="openai",
        base_url=server + "/",
        model="tiny-chat",
        api_key_env="BEATREC_TEST_KEY",
        batch_size=1,
        retries=2,
    )
    ex = make_extractor(cfg)
    out = ex.extract("user", [REVIEWS, ["Cheap and cheerful."]])
    assert out == [["witty dialogue", "great plot"], ["fast shipping"]]
    temps = [r["temperature"] for r in _Handler.requests]
    assert temps == [0.0, 0.0, 0.7]
    assert all(r["model"] == "tiny-chat" and r["messages"][-1]["role"] == "user" for r in _Handler.requests)
    assert _Handler.headers_seen == ["Bearer sk-test"] * 3
    assert server.rstrip("/") in ex.identity


def test_openai_extractor_gives_up_and_reports_errors(server: str) -> None:
    _Handler.replies = [(503, "busy"), (200, "nope"), (200, "nope")]  # overload, then malformed twice
    ex = make_extractor(
        ExtractorConfig(kind="openai", base_url=server, model="m", api_key_env="", retries=2, batch_size=1)
    )
    assert ex.extract("item", [["text"]]) == [None]
    assert _Handler.headers_seen == [None] * 3
    _Handler.replies = [(401, "bad key")]
    with pytest.raises(ExtractionError, match="HTTP 401"):
        ex.extract("item", [["text"]])


def test_openai_connection_failure_names_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    ex = make_extractor(ExtractorConfig(kind="openai", base_url=url, model="m"))
    with pytest.raises(ExtractionError, match=f"127.0.0.1:{port}/v1/chat/completions"):
        ex.extract("user", [["text"]])


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="model"):
        ExtractorConfig(kind="hf").validate()
    with pytest.raises(ConfigError, match="base_url"):
        ExtractorConfig(kind="openai", model="m").validate()
    with pytest.raises(ConfigError, match="kind"):
        ExtractorConfig(kind="gpt").validate()
    with pytest.raises(ConfigError, match="n_phrases"):
        ExtractorConfig(n_phrases=0).validate()


# ---------------------------------------------------------------- local causal LM


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


def test_hf_extractor_plumbing_with_tiny_model(tiny_lm_dir: Path) -> None:
    cfg = ExtractorConfig(
        kind="hf",
        model=str(tiny_lm_dir),
        max_new_tokens=6,
        retries=1,
        batch_size=2,
        max_words=20,
        device="cpu",
    )
    ex = make_extractor(cfg)
    assert str(tiny_lm_dir) in ex.identity
    prompt = ex.prompt("user", ["Great plot."])
    assert prompt.endswith("<|im_start|>assistant\n" + PREFILL) and "Great plot." in prompt
    docs = [["Great plot."], ["Strong characters and witty dialogue, " * 5], ["Fast shipping."]]
    out = ex.extract("user", docs)
    assert len(out) == 3
    for phrases in out:
        assert phrases is None or (
            1 <= len(phrases) <= cfg.n_phrases and all(isinstance(p, str) for p in phrases)
        )
    st = ex.last_stats
    assert st.n_entities == 3 and st.n_failed == sum(p is None for p in out)
    assert 0 < st.n_generated_tokens <= 3 * 2 * cfg.max_new_tokens


def test_hf_extractor_retries_only_failures(tiny_lm_dir: Path) -> None:
    ex = make_extractor(
        ExtractorConfig(kind="hf", model=str(tiny_lm_dir), retries=2, batch_size=8, device="cpu", decoder="generate")
    )
    calls: list[tuple[int, bool, int]] = []
    answers = {0: ['a", "b"]}', "garbage", 'c"]}'], 1: ["still garbage"], 2: ['d", "e"]}']}

    def fake_generate(
        prompts: list[str], sample: bool, seed: int, kind: str | None = None
    ) -> tuple[list[str], int, int]:
        attempt = len(calls)
        calls.append((len(prompts), sample, seed))
        return answers[attempt][: len(prompts)], 0, 0

    ex._generate = fake_generate
    docs = [["one"], ["two two"], ["three three three"], [" "]]  # prompt lengths keep this order in the batch
    assert ex.extract("user", docs) == [["a", "b"], ["d", "e"], ["c"], None]  # no text: None, never generated
    assert calls == [(3, False, 0), (1, True, 1), (1, True, 2)]
    assert ex.last_stats.n_failed == 1


def test_hf_extractor_prefix_cache_gives_the_same_outputs(tiny_lm_dir: Path) -> None:
    cfg = ExtractorConfig(kind="hf", model=str(tiny_lm_dir), max_new_tokens=8, max_words=30, device="cpu")
    with_cache = make_extractor(cfg)
    without = make_extractor(ExtractorConfig(**{**vars(cfg), "prefix_cache": False}))
    prompts = [
        with_cache.prompt("item", d) for d in (["Great plot."], ["Sturdy, light, cheap " * 4], ["-5 stars"])
    ]
    a, _, n_prompt = with_cache._generate(prompts, sample=False, seed=0, kind="item")
    b, _, _ = without._generate(prompts, sample=False, seed=0, kind="item")
    assert a == b
    assert n_prompt == sum(len(with_cache.tokenizer(p)["input_ids"]) for p in prompts)
    batch, _ = with_cache._batch(with_cache._encode(prompts), "item")
    assert batch["past_key_values"].get_seq_length() > 100  # the prefix path was taken
    prefix = with_cache._prefixes["item"]
    assert prefix is not None and len(prefix[0]) > 100  # system turn + demonstration + header


@pytest.mark.slow
def test_smollm2_extracts_valid_phrases() -> None:
    ex = make_extractor(ExtractorConfig(kind="smollm2", batch_size=3, device="cpu"))
    docs = [
        [
            "I bought this for my daughter and she loves the colorful illustrations and the rhyming story.",
            "Sturdy board pages that survive a toddler. Sweet bedtime story.",
        ],
        ["The pasta was perfectly cooked and the staff were friendly, but parking is hard to find."],
        [
            "A gripping thriller with a detective I rooted for; the twist at the end surprised me.",
            "Fast pacing and short chapters kept me up all night.",
        ],
    ]
    out = ex.extract("item", docs)
    assert ex.last_stats.n_failed <= 1
    for phrases in out:
        if phrases is None:
            continue
        assert 1 <= len(phrases) <= 5
        assert all(p == p.strip().lower() and 1 <= len(p.split()) <= 6 for p in phrases)
        assert len(set(phrases)) == len(phrases)


def test_hf_extractor_packed_matrices_give_the_same_outputs(tiny_lm_dir: Path) -> None:
    """extractor.pack (default): the LM's Linear layers packed for oneDNN, the generations unchanged."""
    from beatrec.align.fastlm import PackedLinear, can_pack

    cfg = ExtractorConfig(kind="hf", model=str(tiny_lm_dir), max_new_tokens=8, max_words=30, device="cpu")
    packed = make_extractor(cfg)
    plain = make_extractor(ExtractorConfig(**{**vars(cfg), "pack": False}))
    assert any(isinstance(m, PackedLinear) for m in packed.model.modules()) == can_pack(torch.float32)
    assert not any(isinstance(m, PackedLinear) for m in plain.model.modules())
    prompts = [packed.prompt("user", d) for d in (["Great plot."], ["Sturdy, light, cheap " * 4], ["-5 stars"])]
    assert packed._generate(prompts, sample=False, seed=0, kind="user") == \
        plain._generate(prompts, sample=False, seed=0, kind="user")
    assert packed.identity == plain.identity  # the same phrases: a cache made either way serves both


def test_hf_extractor_fast_decoder_gives_generate_s_outputs(tiny_lm_dir: Path) -> None:
    """extractor.decoder=fast (default): the greedy first attempt through the lean decoder and the fast step gives
    the texts Hugging Face's generate gives with the same stopping rule, row by row, and the same phrases."""
    cfg = ExtractorConfig(kind="hf", model=str(tiny_lm_dir), max_new_tokens=12, max_words=30, device="cpu",
                          prefix_cache=False)
    fast = make_extractor(cfg)
    slow = make_extractor(ExtractorConfig(**{**vars(cfg), "decoder": "generate"}))
    assert fast._fast is not None and slow._fast is None
    docs = [["Great plot."], ["Sturdy, light, cheap " * 4], ["-5 stars"], ["A long, long story " * 6]]
    prompts = [fast.prompt("item", d) for d in docs]
    a, n_a, p_a = fast._generate_fast(prompts)
    b, n_b, p_b = slow._generate(prompts, sample=False, seed=0)
    assert a == b and p_a == p_b
    assert fast.extract("item", docs) == slow.extract("item", docs)
    with pytest.raises(ValueError, match="greedy decoding only"):
        from beatrec.align.config import GenerateConfig
        from beatrec.align.decode import new_search

        new_search(2, GenerateConfig(num_beams=2), 0, 1, stop=lambda s: False)

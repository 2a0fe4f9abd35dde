"""generate / serve / LLM-as-judge on the tiny model. The judge endpoint is a REAL local server:
securefed's own OpenAI-compatible chat-completions server (securefed.inference.serve, the one
`securefed serve` runs) bound to a free port on 127.0.0.1 in a thread, backed by the tiny model through
transformers, and shut down afterwards. (`transformers serve` needs the fastapi/uvicorn extra and
takes far longer to start than this test's budget.) The tiny random model never writes a verdict, so
against it every reply is a bad one, which is what the counting must survive; parsing of well-formed
verdicts is tested on strings."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest
from typer.testing import CliRunner

from securefed.cli.app import app
from securefed.config import load_config
from securefed.evaluation.judge import JudgeClient, JudgeFailure, grade_pairwise, grade_single, parse_rating, parse_verdict
from securefed.evaluation.judge_questions import BUILTIN, reference_check
from securefed.inference.generate import generate_reply
from securefed.inference.load import load_for_inference
from securefed.inference.serve import make_server
from securefed.simulation.runner import simulate

TINY = ["parties=2", "rounds=1", "training.max_steps=2", "training.batch_size=4", "training.max_length=48",
        "data.max_examples=120", "data.eval_max=8", "evaluation.max_examples=8", "evaluation.batch_size=8"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    simulate(load_config(None, TINY), out)
    return out


@pytest.fixture(scope="module")
def loaded(run):
    return load_for_inference(run, device="cpu")


@pytest.fixture(scope="module")
def server_url(loaded):
    server = make_server(loaded, "tiny-judge", "127.0.0.1", 0, max_tokens=24)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}/v1"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _post(url, body: bytes):
    req = urllib.request.Request(url + "/chat/completions", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_generate_streams_what_it_returns_and_cli_prints_it(run, loaded):
    pieces = []
    text, n = generate_reply(loaded.model, loaded.tokenizer, [{"role": "user", "content": "Is it good news?"}],
                             max_new_tokens=8, on_text=pieces.append, device=loaded.device)
    assert n == 8 and "".join(pieces) == text and text.strip()
    res = CliRunner().invoke(app, ["generate", str(run), "--prompt", "Is it good news?", "--max-new-tokens", "8",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == text.strip()


def test_server_speaks_the_chat_completions_route_and_rejects_bad_requests(server_url, loaded):
    status, body = _post(server_url, json.dumps({"model": "x", "messages": [{"role": "user", "content": "hi"}],
                                                 "max_tokens": 6}).encode())
    assert status == 200 and body["object"] == "chat.completion" and body["usage"]["completion_tokens"] == 6
    want, _ = generate_reply(loaded.model, loaded.tokenizer, [{"role": "user", "content": "hi"}], max_new_tokens=6,
                             device=loaded.device)
    assert body["choices"][0]["message"]["content"] == want  # greedy: the same text as in-process
    for bad, field in ((b"{not json", "not JSON"), (b'{"messages": []}', "messages"),
                       (b'{"messages": [{"role": "robot", "content": "x"}]}', "messages[0]"),
                       (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -3}', "max_tokens")):
        status, body = _post(server_url, bad)
        assert status == 400 and field in body["error"]["message"]
    with urllib.request.urlopen(server_url + "/models", timeout=30) as r:
        assert json.loads(r.read())["data"][0]["id"] == "tiny-judge"
    openai = pytest.importorskip("openai")  # the official client talks to it too
    client = openai.OpenAI(base_url=server_url, api_key="unused")
    reply = client.chat.completions.create(model="tiny-judge", messages=[{"role": "user", "content": "hi"}], max_tokens=6)
    assert reply.choices[0].message.content == want


def test_bad_judge_replies_are_counted_never_fatal(server_url, run, tmp_path):
    client = JudgeClient(server_url, "tiny-judge", timeout=60, max_tokens=24)
    qs = BUILTIN[2:5]  # reasoning and math: questions with a reference answer
    single = grade_single(client, qs, ["Carl", "It is Friday.", "102"])
    s = single["summary"]
    assert s["questions"] == 3 and s["scored"] + sum(s["bad_replies"].values()) == 3
    assert s["reference_correct"] == 2 and s["reference_questions"] == 3
    assert all(r["rationale"] for r in single["rows"])  # the judge's reply is kept, verdict or not
    pair = grade_pairwise(client, qs[:1], ["Carl"], ["Anna"])
    assert pair["summary"]["judged"] + sum(pair["summary"]["bad_replies"].values()) == 1
    host_port = server_url.rsplit(":", 1)[0] + ":9"  # discard port: nothing listens
    gone = grade_single(JudgeClient(host_port + "/v1", "m", timeout=5), qs[:1], ["Carl"])
    assert gone["summary"]["bad_replies"] == {"http_error": 1} and gone["summary"]["mean_score"] is None
    # the CLI: answers from the run, graded by the judge, figures and rows written
    res = CliRunner().invoke(app, ["eval", "--run", str(run), "--judge-url", server_url, "--judge-model", "tiny-judge",
                                   "--limit", "2", "--out", str(tmp_path), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "judge_single.json").read_text())
    assert saved["summary"]["questions"] == 2 and len(saved["rows"]) == 2 and saved["judge"] == "tiny-judge"
    res = CliRunner().invoke(app, ["eval", "--run", str(run), "--judge-url", server_url])
    assert res.exit_code == 2 and "--judge-model" in res.output
    slow = grade_single(JudgeClient(server_url, "tiny-judge", timeout=0.001), qs[:1], ["Carl"])
    assert slow["summary"]["bad_replies"] == {"timeout": 1}


def test_verdict_parsing():
    assert parse_rating("Clear and right.\nRating: [[7]]") == 7
    assert parse_rating("Rating: 4") == 4 and parse_rating("first [[2]] then, on reflection, [[9]]") == 9
    assert parse_rating("Polite and clear, and the rating is 4.") == 4 and parse_rating("I give it 7/10") == 7
    assert parse_rating("8 out of 10, [[6]]") == 6  # the requested form wins over a loose one
    for reply, kind in (("Great answer!", "no_score"), ("Rating: [[11]]", "out_of_range"), ("[[0]]", "out_of_range")):
        with pytest.raises(JudgeFailure) as e:
            parse_rating(reply)
        assert e.value.kind == kind
    assert parse_verdict("B is more precise. [[B]]") == "B" and parse_verdict("[[C]]") == "C"
    with pytest.raises(JudgeFailure):
        parse_verdict("both fine")
    assert reference_check("The answer is 102.", "102") and not reference_check("1020", "102")
    assert reference_check("It's Thursday", "thursday")


def test_chat_streams_replies_and_resets(run, loaded):
    res = CliRunner().invoke(app, ["chat", str(run), "--max-new-tokens", "4", "--device", "cpu"],
                             input="hello\n/reset\nhello\n/exit\n")
    assert res.exit_code == 0, res.output
    want, _ = generate_reply(loaded.model, loaded.tokenizer, [{"role": "user", "content": "hello"}], max_new_tokens=4,
                             device=loaded.device)
    replies = [line.replace("> ", "") for line in res.stdout.splitlines() if line.replace("> ", "").strip()]
    assert replies == [want, want]  # after /reset the first turn again: the same greedy reply

"""Bad input gets a 4xx in OpenAI's error shape naming the field, before any routing or upstream call."""

from __future__ import annotations

import base64

import httpx
import openai
import pytest

OK_MSG = [{"role": "user", "content": "What is 2 + 2?"}]
GARBAGE = "data:image/png;base64," + base64.b64encode(b"not an image at all").decode()


def _img(url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "What is shown?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


@pytest.mark.parametrize(("body", "status", "param", "code"), [
    ({"model": "no-such-model", "messages": OK_MSG}, 404, "model", "model_not_found"),
    ({"model": "lrouter:abc", "messages": OK_MSG}, 400, "model", None),
    ({"model": "lrouter:-1", "messages": OK_MSG}, 400, "model", None),
    ({"model": "lrouter", "messages": OK_MSG, "lambda": "high"}, 400, "lambda", None),
    ('{"model": "lrouter", "messages": [{"role": "user", "content": "hi"}], "lambda": 1e400}', 400, "lambda",
     None),
    ({"model": "lrouter", "messages": OK_MSG, "target": "fastest"}, 400, "target", None),
    ({"model": "lrouter", "messages": OK_MSG, "models": ["nope"]}, 400, "models", None),
    ({"model": "lrouter", "messages": OK_MSG, "max_cost_usd": 1e-12}, 400, "max_cost_usd", "budget_too_low"),
    ({"model": "lrouter", "messages": OK_MSG, "max_cost_usd": -1}, 400, "max_cost_usd", None),
    ({"model": "lrouter", "messages": []}, 400, "messages", None),
    ({"model": "lrouter"}, 400, "messages", None),
    ({"model": "lrouter", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role", None),
    ({"model": "lrouter", "messages": _img("https://example.com/cat.png")}, 400,
     "messages[0].content[1].image_url.url", "image_url_not_supported"),
    ({"model": "lrouter", "messages": _img(GARBAGE)}, 400, "messages[0].content[1].image_url.url", "invalid_image"),
    ({"model": "lrouter", "messages": _img("data:image/png;base64,@@@")}, 400,
     "messages[0].content[1].image_url.url", "invalid_image"),
    ({"model": "lrouter", "messages": OK_MSG, "stream": "yes"}, 400, "stream", None),
])
def test_bad_input_is_refused_in_openai_error_shape(gateway, body, status, param, code):
    kw = {"content": body.encode()} if isinstance(body, str) else {"json": body}
    r = httpx.post(gateway.url + "/v1/chat/completions", timeout=30, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["param"] == param and err["type"] == "invalid_request_error"
    if code:
        assert err["code"] == code
    assert "x-lrouter-request-id" in r.headers


def test_oversized_and_non_json_bodies(gateway):
    big = {"model": "lrouter", "messages": [{"role": "user", "content": "x" * 3_000_000}]}
    r = httpx.post(gateway.url + "/v1/chat/completions", json=big, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["param"] == "body"
    r = httpx.post(gateway.url + "/v1/chat/completions", content=b"{not json", timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.get(gateway.url + "/v1/nothing-here", timeout=30)
    assert r.status_code == 404 and "message" in r.json()["error"]


def test_the_openai_client_raises_typed_errors(gateway):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="gpt-nope", messages=OK_MSG)
    assert nf.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as br:
        client.chat.completions.create(model="lrouter", messages=OK_MSG, extra_body={"lambda": -3})
    assert br.value.body["param"] == "lambda"

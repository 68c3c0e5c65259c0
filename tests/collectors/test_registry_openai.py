"""Registry entries of OpenAI-compatible servers: what is refused before any write, what round-trips, and the
models-table columns the gateway and the collector read."""

from __future__ import annotations

import polars as pl
import pytest

from collectors.registry import (
    ModelEntry,
    RegistryError,
    add_model,
    load_registry,
    models_table,
    save_registry,
)


def _openai(**kw) -> ModelEntry:
    base = dict(model_id="gpt-4o-mini", backend="openai", endpoint="http://127.0.0.1:8000/v1",
                api_key_env="OPENAI_API_KEY", price_in_per_mtok=0.15, price_out_per_mtok=0.6)
    return ModelEntry(**{**base, **kw})


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"endpoint": ""}, "backend 'openai' needs endpoint"),
        ({"endpoint": "https://user:sk-secret@api.example.com/v1"}, "must not carry credentials"),
        ({"api_key_env": "sk-proj-abc123"}, "NAME of an environment variable"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"price_per_image_usd": -0.01}, "price_per_image_usd"),
    ],
)
def test_bad_openai_entries_are_refused_before_writing(tmp_path, kw, msg):
    path = tmp_path / "models.yaml"
    save_registry(path, [_openai(model_id="a")])
    before = path.read_bytes()
    with pytest.raises((RegistryError, ValueError), match=msg):
        add_model(path, _openai(**kw))
    assert path.read_bytes() == before


def test_openai_entry_round_trips_and_reaches_the_models_table(tmp_path):
    path = tmp_path / "models.yaml"
    qwen = _openai(model_id="qwen2-vl", server_model="Qwen/Qwen2-VL-7B-Instruct", price_per_image_usd=0.001,
                   max_concurrency=16, requests_per_minute=600.0)
    save_registry(path, [_openai(), qwen])
    text = path.read_text()
    assert "server_model: ''" not in text  # an unset server name is not written
    a, b = load_registry(path)
    assert a.served_name == "gpt-4o-mini" and b.served_name == "Qwen/Qwen2-VL-7B-Instruct"
    assert b == qwen
    t = models_table([a, b])
    assert t.schema["max_concurrency"] == pl.Int64 and t.schema["price_per_image_usd"] == pl.Float64
    row = t.row(1, named=True)
    assert row["backend"] == "openai" and row["endpoint"] == "http://127.0.0.1:8000/v1"
    assert row["api_key_env"] == "OPENAI_API_KEY" and row["server_model"] == "Qwen/Qwen2-VL-7B-Instruct"
    # a table of sim-only entries keeps the columns typed (all null)
    sims = models_table([ModelEntry(model_id="s", backend="sim")])
    assert sims.schema["requests_per_minute"] == pl.Float64 and sims["requests_per_minute"].to_list() == [None]

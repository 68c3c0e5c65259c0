"""Credentials reach only the server they belong to."""

from __future__ import annotations

from assets.resources import OllamaResource
from collectors.registry import ModelEntry


def test_default_key_goes_only_to_the_default_host(monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", "default-secret")
    monkeypatch.setenv("OTHER_KEY", "other-secret")
    res = OllamaResource()
    on_default = ModelEntry(model_id="llava:7b")
    elsewhere = ModelEntry(model_id="qwen:7b", endpoint="http://127.0.0.2:11434")
    elsewhere_keyed = ModelEntry(model_id="qwen:7b", endpoint="http://127.0.0.2:11434", api_key_env="OTHER_KEY")
    assert res.headers(on_default) == {"authorization": "Bearer default-secret"}
    assert res.headers(elsewhere) == {}  # was: the default key sent to every registered endpoint
    assert res.headers(elsewhere_keyed) == {"authorization": "Bearer other-secret"}
    monkeypatch.delenv("OTHER_KEY")
    assert res.headers(elsewhere_keyed) == {}


def test_api_key_env_round_trips_through_the_registry(tmp_path):
    from collectors.registry import add_model, ensure_registry

    path = tmp_path / "models.yaml"
    ensure_registry(path)
    add_model(path, ModelEntry(model_id="qwen:7b", endpoint="http://127.0.0.2:1", api_key_env="QWEN_KEY"),
              check_endpoint=None)
    entry = {e.model_id: e for e in ensure_registry(path)}["qwen:7b"]
    assert entry.api_key_env == "QWEN_KEY"
    assert "QWEN_KEY" in path.read_text() and "secret" not in path.read_text()

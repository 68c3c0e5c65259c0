"""The model registry: validation before any write, add / re-enable / disable, table mirror."""

from __future__ import annotations

import pytest

from collectors.registry import (
    ModelEntry,
    RegistryError,
    add_model,
    disable_model,
    load_registry,
    models_table,
    save_registry,
)


def _entry(name="m:1", **kw) -> ModelEntry:
    return ModelEntry(model_id=name, backend="ollama", price_in_per_mtok=1.0, price_out_per_mtok=2.0, **kw)


def test_round_trip_and_table(tmp_path):
    path = tmp_path / "models.yaml"
    save_registry(path, [_entry("a"), _entry("b", params_b=7.0)])
    entries = load_registry(path)
    assert [e.model_id for e in entries] == ["a", "b"]
    t = models_table(entries)
    assert t["model_id"].to_list() == ["a", "b"] and t["params_b"].to_list() == [None, 7.0]
    assert t["active"].to_list() == [True, True]


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"backend": "vllm"}, "unknown backend"),
        ({"price_in_per_mtok": -1.0}, "price_in_per_mtok"),
        ({"endpoint": "ftp://x"}, "endpoint"),
        ({"params_b": 0}, "params_b"),
    ],
)
def test_invalid_entries_name_the_field_and_change_nothing(tmp_path, kw, msg):
    path = tmp_path / "models.yaml"
    save_registry(path, [_entry("a")])
    before = path.read_bytes()
    with pytest.raises((RegistryError, ValueError), match=msg):
        add_model(path, ModelEntry(**{"model_id": "new", **kw}))
    assert path.read_bytes() == before


def test_bad_file_errors_name_entry(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  - model_id: a\n    backend: ollama\n  - model_id: b\n    price_out_per_mtok: -3\n")
    with pytest.raises(RegistryError, match=r"models\[1\] \(b\): field 'price_out_per_mtok'"):
        load_registry(path)
    path.write_text("models:\n  - model_id: a\n  - model_id: a\n")
    with pytest.raises(RegistryError, match="duplicate model_id 'a'"):
        load_registry(path)
    path.write_text("models: [unclosed\n")
    with pytest.raises(RegistryError, match="not valid YAML"):
        load_registry(path)


def test_add_duplicate_disable_and_reenable(tmp_path):
    path = tmp_path / "models.yaml"
    save_registry(path, [_entry("a")])
    add_model(path, _entry("b"))
    with pytest.raises(RegistryError, match="already registered"):
        add_model(path, _entry("b"))
    disable_model(path, "b")
    assert {e.model_id: e.active for e in load_registry(path)} == {"a": True, "b": False}
    add_model(path, _entry("b"))  # re-enabling is allowed
    assert {e.model_id: e.active for e in load_registry(path)} == {"a": True, "b": True}
    with pytest.raises(RegistryError, match="no model named"):
        disable_model(path, "zzz")


def test_unreachable_endpoint_changes_nothing(tmp_path):
    path = tmp_path / "models.yaml"
    save_registry(path, [_entry("a")])
    before = path.read_bytes()

    def refuse(entry):
        raise RegistryError(f"endpoint for {entry.model_id!r} is unreachable")

    with pytest.raises(RegistryError, match="unreachable"):
        add_model(path, _entry("c", endpoint="http://127.0.0.1:9"), check_endpoint=refuse)
    assert path.read_bytes() == before

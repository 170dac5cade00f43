"""Validation rules of the wire models (the server turns these into 422 VALIDATION_ERROR)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from fetchml.core.enums import Role
from fetchml.core.models import (
    MAX_JSON_DEPTH,
    CreateExperimentRequest,
    CreateKeyRequest,
    CreateTaskRequest,
    DatasetSpec,
    check_mount_path,
    json_depth,
)

SHA = "a" * 64


def spec(**over: Any) -> dict[str, Any]:
    return {"name": "mnist", "source": "/data/mnist", "sha256": SHA, "mount_path": "data/mnist", **over}


def task(**over: Any) -> CreateTaskRequest:
    return CreateTaskRequest.model_validate({"job_name": "train", **over})


def error_locs(exc: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in exc.value.errors()}


# --- CreateTaskRequest ---------------------------------------------------------------------


def test_minimal_task_gets_defaults() -> None:
    t = task()
    assert t.priority == 5
    assert t.node_count == 1
    assert t.max_retries is None and t.dataset_specs is None and t.plugin_configs is None


@pytest.mark.parametrize("name", ["a", "train", "Train_v2-final", "x" * 64, "0", "-", "_"])
def test_job_name_accepts_pattern(name: str) -> None:
    assert task(job_name=name).job_name == name


@pytest.mark.parametrize(
    "name", ["", "x" * 65, "has space", "dot.ted", "slash/x", "ünï", "semi;colon", "new\nline", "tab\t"]
)
def test_job_name_rejects(name: str) -> None:
    with pytest.raises(ValidationError) as exc:
        task(job_name=name)
    assert error_locs(exc) == {"job_name"}


def test_job_name_is_required() -> None:
    with pytest.raises(ValidationError) as exc:
        CreateTaskRequest.model_validate({})
    assert "job_name" in error_locs(exc)


@pytest.mark.parametrize("priority", [1, 5, 10])
def test_priority_range_accepts(priority: int) -> None:
    assert task(priority=priority).priority == priority


@pytest.mark.parametrize("priority", [0, 11, -1, 100, "high", 5.5])
def test_priority_range_rejects(priority: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        task(priority=priority)
    assert error_locs(exc) == {"priority"}


@pytest.mark.parametrize("field", ["cpu", "memory_gb", "gpu"])
def test_resources_may_not_be_negative(field: str) -> None:
    assert getattr(task(**{field: 0}), field) == 0
    assert getattr(task(**{field: 8}), field) == 8
    with pytest.raises(ValidationError) as exc:
        task(**{field: -1})
    assert error_locs(exc) == {field}


def test_optional_fields_are_accepted() -> None:
    t = task(
        image="pytorch/pytorch:2.4",
        gpu_type="A100",
        max_retries=2,
        node_count=4,
        reservation_id="res-1",
        plugin_configs={"mlflow": {"enabled": True, "mode": "sidecar", "settings": {"x": 1}}},
        metadata={"k": "v"},
        datasets=["mnist"],
        entrypoint="train.py",
        args="--epochs 3",
    )
    assert t.node_count == 4 and t.max_retries == 2 and t.gpu_type == "A100"
    assert t.plugin_configs is not None and t.plugin_configs["mlflow"].mode == "sidecar"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("node_count", 0),
        ("max_retries", -1),
        ("plugin_configs", {"mlflow": {"mode": "teleport"}}),
        ("metadata", {"k": 1}),
        ("image", "x" * 513),
    ],
)
def test_optional_fields_are_checked(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        task(**{field: value})
    assert any(loc.split(".")[0] == field for loc in error_locs(exc))


def test_resource_counts_fit_a_32_bit_column() -> None:
    assert task(cpu=2**31 - 1).cpu == 2**31 - 1
    for field in ("cpu", "memory_gb", "gpu"):
        with pytest.raises(ValidationError) as exc:
            task(**{field: 2**31})
        assert error_locs(exc) == {field}


def nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def test_json_depth() -> None:
    assert [json_depth(v) for v in (1, "x", None, {}, [], {"a": 1}, {"a": [1, {"b": []}]})] == [
        0,
        0,
        0,
        1,
        1,
        1,
        4,
    ]
    assert json_depth(nested(5000)) == 5000  # iterative: no RecursionError


def test_plugin_settings_depth_is_bounded() -> None:
    ok = task(plugin_configs={"p": {"settings": {"k": nested(MAX_JSON_DEPTH - 1)}}})
    assert ok.plugin_configs is not None
    with pytest.raises(ValidationError) as exc:
        task(plugin_configs={"p": {"settings": {"k": nested(MAX_JSON_DEPTH)}}})
    assert error_locs(exc) == {"plugin_configs.p.settings"}


def test_user_id_in_body_is_ignored() -> None:
    t = task(user_id="mallory")
    assert not hasattr(t, "user_id")
    assert "user_id" not in t.model_dump()


# --- DatasetSpec -------------------------------------------------------------------------------


def test_dataset_spec_well_formed() -> None:
    d = DatasetSpec.model_validate(spec(sha256="ABCDEF" + "0" * 58))
    assert d.sha256 == "abcdef" + "0" * 58  # normalised to lower case
    assert d.mount_path == "data/mnist"


@pytest.mark.parametrize("sha", ["", "a" * 63, "a" * 65, "g" * 64, "a" * 63 + " ", "0x" + "a" * 62])
def test_dataset_sha256_must_be_64_hex(sha: str) -> None:
    with pytest.raises(ValidationError) as exc:
        DatasetSpec.model_validate(spec(sha256=sha))
    assert error_locs(exc) == {"sha256"}


@pytest.mark.parametrize("missing", ["name", "source", "sha256"])
def test_dataset_spec_requires(missing: str) -> None:
    body = spec()
    del body[missing]
    with pytest.raises(ValidationError) as exc:
        DatasetSpec.model_validate(body)
    assert error_locs(exc) == {missing}


@pytest.mark.parametrize(
    "source", ["/data/x", "relative/x", "file:///data/x", "https://host/x.tar", "http://h/x"]
)
def test_dataset_source_accepts(source: str) -> None:
    assert DatasetSpec.model_validate(spec(source=source)).source == source


@pytest.mark.parametrize("source", ["", "ftp://host/x", "s3x://bucket/x", "javascript://x"])
def test_dataset_source_rejects(source: str) -> None:
    with pytest.raises(ValidationError) as exc:
        DatasetSpec.model_validate(spec(source=source))
    assert error_locs(exc) == {"source"}


@pytest.mark.parametrize(
    ("mount", "normalised"),
    [("data", "data"), ("data/mnist", "data/mnist"), ("a/./b", "a/b"), ("a/../b", "b"), ("a\\b", "a/b")],
)
def test_mount_path_accepts_relative_inside(mount: str, normalised: str) -> None:
    assert DatasetSpec.model_validate(spec(mount_path=mount)).mount_path == normalised
    assert check_mount_path(mount) == normalised


@pytest.mark.parametrize(
    "mount",
    [
        "",
        "/abs",
        "/",
        "\\abs",
        "C:\\data",
        "c:data",
        "..",
        "../x",
        "a/../../x",
        "a/b/../../..",
        ".",
        "./",
        "\\..\\x",
    ],
)
def test_mount_path_rejects_absolute_or_escaping(mount: str) -> None:
    with pytest.raises(ValidationError) as exc:
        DatasetSpec.model_validate(spec(mount_path=mount))
    assert error_locs(exc) == {"mount_path"}


def test_task_dataset_specs_are_validated_with_their_position() -> None:
    with pytest.raises(ValidationError) as exc:
        task(dataset_specs=[spec(), spec(name="b", mount_path="../b")])
    assert error_locs(exc) == {"dataset_specs.1.mount_path"}


def test_two_datasets_may_not_share_a_mount() -> None:
    with pytest.raises(ValidationError) as exc:
        task(dataset_specs=[spec(name="a", mount_path="d"), spec(name="b", mount_path="x/../d")])
    assert error_locs(exc) == {"dataset_specs"}
    assert task(dataset_specs=[spec(name="a", mount_path="d"), spec(name="b", mount_path="e")])


# --- experiments and keys ----------------------------------------------------------------------


def test_experiment_name_length() -> None:
    assert CreateExperimentRequest(name="x" * 128).name == "x" * 128
    for bad in ("", "x" * 129):
        with pytest.raises(ValidationError) as exc:
            CreateExperimentRequest(name=bad)
        assert error_locs(exc) == {"name"}


def test_create_key_request() -> None:
    assert CreateKeyRequest.model_validate({"user": "alice", "role": "worker"}).role is Role.WORKER
    for bad in ({"user": "alice", "role": "root"}, {"user": "a b", "role": "user"}, {"role": "user"}):
        with pytest.raises(ValidationError):
            CreateKeyRequest.model_validate(bad)

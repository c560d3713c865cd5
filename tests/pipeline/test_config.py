"""Pipeline YAML: one-line errors naming file and path, overrides, interpolation, masking."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from deepcvr.cli import app
from deepcvr.errors import ConfigError
from deepcvr.metadata import MetadataStore
from deepcvr.pipeline.config import load_pipeline, pipeline_json_schema
from deepcvr.pipeline.runner import run_pipeline
from deepcvr.secrets import mask_secrets, mask_url

GOOD = """\
name: demo
workspace: "{ws}"
params: {n: 3, label: hello}
tasks:
  a: {op: test.step, with: {tag: "${params.label}", count: "${params.n}"}}
  b: {op: test.step, needs: [a], with: {tag: "x${params.n}-${workspace}"}}
  c:
    op: test.step
    needs: [a]
    with:
"""

BAD = {
    "unknown top-level key": (
        "name: x\ntasks: {a: {op: test.step}}\nmax_paralel: 3\n",
        "max_paralel: unknown key (allowed: name, description, workspace, params, max_parallel,"
        " tasks) (did you mean 'max_parallel'?)",
    ),
    "unknown task key": (
        "name: x\ntasks:\n  a: {op: test.step, nedds: [b]}\n",
        "tasks.a.nedds: unknown key (allowed: op, needs, with) (did you mean 'needs'?)",
    ),
    "unknown op": (
        "name: x\ntasks:\n  a: {op: test.stepp}\n",
        "tasks.a.op: unknown op 'test.stepp' (did you mean 'test.step'?) (known: ",
    ),
    "unknown with key": (
        "name: x\ntasks:\n  a: {op: test.step, with: {tagg: 1}}\n",
        "tasks.a.with.tagg: unknown key (allowed: tag, count, target,",
    ),
    "wrong type": (
        "name: x\ntasks:\n  a: {op: test.step, with: {count: many}}\n",
        "tasks.a.with.count: input should be a valid integer",
    ),
    "bad choice in a list": (
        "name: x\ntasks:\n  a: {op: test.step, with: {splits: [train, tset]}}\n",
        "tasks.a.with.splits[1]: input should be 'train' or 'test' (got 'tset')",
    ),
    "missing needs target": (
        "name: x\ntasks:\n  a: {op: test.step}\n  b: {op: test.step, needs: [aa]}\n",
        "tasks.b.needs: unknown task 'aa' (did you mean 'a'?)",
    ),
    "cycle": (
        "name: x\ntasks:\n  a: {op: test.step, needs: [b]}\n  b: {op: test.step, needs: [a]}\n",
        "tasks: dependency cycle ",
    ),
    "bad interpolation": (
        "name: x\nparams: {p: 1}\ntasks:\n  a: {op: test.step, with: {tag: '${params.nope}'}}\n",
        "tasks.a.with.tag: ${params.nope}: unknown param 'nope' (params: p)",
    ),
    "unknown reference": (
        "name: x\ntasks:\n  a: {op: test.step, with: {tag: '${foo}'}}\n",
        "tasks.a.with.tag: unknown reference ${foo}",
    ),
    "missing env var": (
        "name: x\ntasks:\n  a: {op: test.step, with: {target: '${env:DEEPCVR_TEST_UNSET}'}}\n",
        "tasks.a.with.target: ${env:DEEPCVR_TEST_UNSET} is not set; export it or use --set",
    ),
    "YAML syntax error": (
        "name: x\ntasks:\n  a: {op: test.step\n  b: [\n",
        "line 4, column ",
    ),
    "duplicate task": (
        "name: x\ntasks:\n  a: {op: test.step}\n  a: {op: test.step}\n",
        "line 4, column 3: invalid YAML: duplicate key 'a'",
    ),
    "no tasks": ("name: x\ntasks: {}\n", "tasks: dictionary should have at least 1 item"),
    "missing name": ("tasks: {a: {op: test.step}}\n", "name: required key is missing"),
    "not a mapping": ("- a\n- b\n", "expected a mapping with 'name' and 'tasks'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_invalid_pipeline_is_one_line_naming_file_and_path(write_pipeline, monkeypatch, case):
    monkeypatch.delenv("DEEPCVR_TEST_UNSET", raising=False)
    text, expected = BAD[case]
    path = write_pipeline(text)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert info.value.exit_code == 2


def test_cycle_names_the_tasks_in_order(write_pipeline):
    path = write_pipeline(
        "name: x\ntasks:\n  a: {op: test.step, needs: [c]}\n"
        "  b: {op: test.step, needs: [a]}\n  c: {op: test.step, needs: [b]}\n"
    )
    with pytest.raises(ConfigError, match=r"tasks: dependency cycle a -> c -> b -> a$"):
        load_pipeline(path)


def test_validate_command_exit_2_one_line_no_traceback(write_pipeline):
    path = write_pipeline(BAD["unknown with key"][0])
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert "tasks.a.with.tagg: unknown key" in result.stderr
    assert "Traceback" not in result.output


def test_validate_ok_and_missing_file(write_pipeline, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(write_pipeline(GOOD))])
    assert ok.exit_code == 0, ok.output
    assert "ok" in ok.stdout and "a, b, c" in ok.stdout
    missing = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2
    assert missing.stderr.startswith(f"error: {tmp_path / 'nope.yaml'}: cannot read")


def test_good_pipeline_interpolates_with_types(write_pipeline, tmp_path):
    p = load_pipeline(write_pipeline(GOOD))
    assert p.order() == ["a", "b", "c"]
    assert p.task_params["a"].tag == "hello"
    assert p.task_params["a"].count == 3  # a whole-string reference keeps the int
    assert p.task_params["b"].tag == f"x3-{tmp_path / 'ws'}"
    assert p.task_params["c"].tag == ""  # empty `with:` means defaults
    assert p.workspace == tmp_path / "ws"


def test_set_overrides_param_dotted_path_and_new_with_key(write_pipeline):
    path = write_pipeline(GOOD)
    p = load_pipeline(
        path,
        ["n=7", "label=bye", "tasks.b.with.tag=plain", "tasks.c.with.count=5", "max_parallel=4"],
    )
    assert p.task_params["a"].count == 7
    assert p.task_params["a"].tag == "bye"
    assert p.task_params["b"].tag == "plain"
    assert p.task_params["c"].count == 5
    assert p.config.max_parallel == 4


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("nn=1", "--set nn: unknown param 'nn' (did you mean 'n'?)"),
        ("tasks.zz.with.tag=1", "--set tasks.zz.with.tag: unknown task 'zz'"),
        ("tasks.a.wiht.tag=1", "--set tasks.a.wiht.tag: expected tasks.TASK.op"),
        ("nokey", "--set nokey: expected KEY=VALUE"),
        ("tasks.a.with.count=x", "tasks.a.with.count: input should be a valid integer"),
        ("tasks.a.with.tagg=x", "tasks.a.with.tagg: unknown key"),
    ],
)
def test_set_errors(write_pipeline, item, expected):
    path = write_pipeline(GOOD)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, [item])
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_env_values_are_masked_in_view_and_store(write_pipeline, monkeypatch, calls):
    monkeypatch.setenv("DEEPCVR_TEST_PW", "s3cr3t-pw")
    monkeypatch.setenv("DEEPCVR_TEST_URL", "postgresql://bob:hunter22@db/x")
    path = write_pipeline(
        "name: secret\nworkspace: '{ws}'\n"
        "params: {url: 'mysql://u:literal-pw@h/db', pw: '${env:DEEPCVR_TEST_PW}'}\n"
        "tasks:\n"
        "  a: {op: test.step, with: {target: 'postgresql://u:${env:DEEPCVR_TEST_PW}@h/db'}}\n"
        "  b: {op: test.step, with: {target: '${env:DEEPCVR_TEST_URL}'}}\n"
        "  c: {op: test.step, with: {target: '${params.url}'}}\n"
        "  d: {op: test.step, with: {target: 'x://u:${params.pw}@h', tag: '${params.pw}'}}\n"
    )
    p = load_pipeline(path)
    assert p.task_params["a"].target == "postgresql://u:s3cr3t-pw@h/db"
    assert p.masked["tasks"]["a"]["with"]["target"] == "postgresql://u:***@h/db"
    assert p.masked["tasks"]["b"]["with"]["target"] == "***"
    assert p.masked["tasks"]["c"]["with"]["target"] == "mysql://u:***@h/db"
    assert p.masked["params"]["url"] == "mysql://u:***@h/db"
    assert p.masked["tasks"]["d"]["with"] == {"target": "x://u:***@h", "tag": "***"}
    assert p.task_params["d"].tag == "s3cr3t-pw"
    result = run_pipeline(p, table=False)
    assert result.status == "succeeded"
    store = MetadataStore.for_workspace(p.workspace)
    stored = json.dumps([store.latest_run(), store.task_runs(result.run_id)])
    for secret in ("s3cr3t-pw", "hunter22", "literal-pw"):
        assert secret not in stored


def test_mask_helpers():
    assert mask_url("postgresql+psycopg://u:p%40ss@host:5432/db") == (
        "postgresql+psycopg://u:***@host:5432/db"
    )
    assert mask_url("duckdb:///data/x.duckdb") == "duckdb:///data/x.duckdb"
    assert mask_url("s3://bucket/key@v1") == "s3://bucket/key@v1"
    masked = mask_secrets({"password": "x", "nested": ["mysql://a:b@c/d"], "n": 1})
    assert masked == {"password": "***", "nested": ["mysql://a:***@c/d"], "n": 1}


def test_json_schema_lists_ops_and_validates(write_pipeline):
    schema = pipeline_json_schema()
    text = json.dumps(schema)
    assert json.loads(text) == schema
    ops = schema["$defs"]["TaskConfig"]["properties"]["op"]["enum"]
    assert {"test.step", "synth.generate", "extract.decompress", "transform.aliccp"} <= set(ops)
    assert "with.test.step" in schema["$defs"]
    jsonschema = pytest.importorskip("jsonschema")
    good = {"name": "x", "tasks": {"a": {"op": "test.step", "with": {"count": 2}}}}
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"name": "x", "tasks": {"a": {"op": "test.step", "with": {"z": 1}}}}, schema
        )


def test_validate_schema_command():
    result = CliRunner().invoke(app, ["validate", "--schema"])
    assert result.exit_code == 0
    assert (
        "test.step" in json.loads(result.stdout)["$defs"]["TaskConfig"]["properties"]["op"]["enum"]
    )


def test_mask_url_hides_signed_url_query_secrets() -> None:
    url = "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA1/x&X-Amz-Signature=abc123&v=1"
    masked = mask_url(url)
    assert "AKIA1" not in masked and "abc123" not in masked and "v=1" in masked

"""devmesh.config: loading, validating and dumping devmesh.yaml.

One ``configs/bad_*.yaml`` per error message: each test pins the message, the
line, the dotted path and that the hint says what to do.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from devmesh.config import dump_project, find_config, load_project, parse_project
from devmesh.config.model import (
    DEFAULT_VERSION,
    BreakerPolicy,
    Build,
    FaultMatch,
    FaultSpec,
    Health,
    Policy,
    PoolPolicy,
    Project,
    RetryPolicy,
)
from devmesh.errors import ConfigError, Problem, UsageError

CONFIGS = Path(__file__).parent / "configs"
NOTHING_TO_RUN = (
    "add `command:` (run it as a local process) or `image:`/`build:` (run it in Docker)"
)


def problems_in(name: str) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_project(CONFIGS / name)
    return caught.value.problems


def problems_of(data: object) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        parse_project(data)
    return caught.value.problems


def without_lines(project: Project) -> Project:
    """``project`` minus what a dump cannot carry: its source and line numbers."""
    services = {
        name: replace(
            service,
            line=None,
            versions=tuple(replace(version, line=None) for version in service.versions),
        )
        for name, service in project.services.items()
    }
    return replace(project, services=services, source=None)


# (file, line, path, message, part of the hint)
BAD = [
    (
        "bad_yaml_indentation.yaml",
        4,
        "",
        "the file is not valid YAML: expected <block end>, but found '<block mapping start>' "
        "while parsing a block mapping that starts on line 2 (column 4)",
        "check the indentation",
    ),
    (
        "bad_yaml_unclosed_quote.yaml",
        3,
        "",
        "the file is not valid YAML: found unexpected end of stream while scanning a quoted "
        "scalar that starts at column 14 (the parser gave up on line 7)",
        "quoting",
    ),
    (
        "bad_yaml_tag.yaml",
        3,
        "services.web.command",
        "the tag !secret is not supported",
        "remove the tag",
    ),
    (
        "bad_duplicate_key.yaml",
        5,
        "services.web.port",
        "the key 'port' is given twice (first on line 4)",
        "keep one of them",
    ),
    (
        "bad_key_not_string.yaml",
        5,
        "services.catalog.versions.1",
        "the key 1 is not a string",
        "quote it: '1':",
    ),
    ("bad_empty_file.yaml", 1, "", "the file is empty", "add a `services:` mapping"),
    (
        "bad_top_level_list.yaml",
        1,
        "",
        "the top level of the file must be a mapping, not a list",
        "start the file with `services:`",
    ),
    (
        "bad_unknown_top_key.yaml",
        4,
        "polices",
        "unknown key 'polices' in the project",
        "did you mean 'policies'?",
    ),
    (
        "bad_unknown_service_key.yaml",
        3,
        "services.web.comand",
        "unknown key 'comand' in service web",
        "did you mean 'command'?",
    ),
    (
        "bad_unknown_service_key_no_match.yaml",
        4,
        "services.web.restart",
        "unknown key 'restart' in service web",
        "the keys service web accepts are: build, command, depends_on, env, expose, health, "
        "image, interception, mtls, port, protocol, replicas, versions",
    ),
    (
        "bad_interception.yaml",
        5,
        "services.web.interception",
        "interception of service web must be one of transparent, env, not 'proxy'",
        "write e.g. `interception: env`",
    ),
    (
        "bad_reserved_port.yaml",
        5,
        "services.web.port",
        "port 15001 of web is reserved for devmesh's sidecar (15000-15099)",
        "have the service listen on another port",
    ),
    (
        "bad_tcp_health_path.yaml",
        7,
        "services.db.health.path",
        "db speaks tcp, so it has no HTTP health check",
        "remove `path:`",
    ),
    (
        "bad_tcp_exposed_replicas.yaml",
        7,
        "services.db.expose",
        "db speaks tcp and runs 2 instances, but a tcp port can be exposed for one instance only",
        "run one instance of it, or remove `expose:`",
    ),
    (
        "bad_fault_does_nothing.yaml",
        7,
        "policies.web.faults[0]",
        "fault 1 of the policy for web does nothing",
        "give it a delay, an abort, a bandwidth or a hang",
    ),
    (
        "bad_fault_abort_both.yaml",
        7,
        "policies.web.faults[0].abort",
        "the abort of fault 1 of the policy for web needs one of http_status and reset",
        "write `abort: {http_status: 503}` or `abort: {reset: true}`",
    ),
    (
        "bad_fault_percent.yaml",
        9,
        "policies.web.faults[0].delay.percent",
        "percent of the delay of fault 1 of the policy for web must be from 0 to 100, not 120",
        "percent: 50",
    ),
    (
        "bad_fault_bandwidth.yaml",
        8,
        "policies.web.faults[0].bandwidth",
        "bandwidth of fault 1 of the policy for web must be a size, not the text 'fast'",
        "64kB",
    ),
    (
        "bad_fault_source.yaml",
        11,
        "policies.web.faults[0].match.source",
        "a fault of the policy for web matches calls from 'fronted', which is not a service",
        "did you mean 'frontend'?",
    ),
    (
        "bad_lb.yaml",
        7,
        "policies.web.lb",
        "lb of the policy for web must be one of round-robin, least-request, not 'random'",
        "write e.g. `lb: least-request`",
    ),
    (
        "bad_version_port.yaml",
        6,
        "services.catalog.versions.v1.port",
        "unknown key 'port' in version v1 of catalog",
        "move it up, next to `versions:`",
    ),
    (
        "bad_services_missing.yaml",
        2,
        "services",
        "the project has no services",
        "add `services: {web: {command: python3 -m http.server}}`",
    ),
    ("bad_services_empty.yaml", 2, "services", "services is empty", "add at least one service"),
    (
        "bad_project_name.yaml",
        1,
        "name",
        "project name 'My Shop' is not valid",
        "e.g. `name: my-shop`",
    ),
    (
        "bad_service_name.yaml",
        2,
        "services.Web_App",
        "service name 'Web_App' is not valid",
        "e.g. 'web-app'",
    ),
    (
        "bad_reserved_ingress.yaml",
        2,
        "services.ingress",
        "the service name 'ingress' is reserved for devmesh's gateway",
        "rename the service",
    ),
    (
        "bad_service_not_mapping.yaml",
        2,
        "services.web",
        "service web must be a mapping, not the text 'python3 app.py'",
        "`command: python3 app.py`",
    ),
    (
        "bad_command_not_string.yaml",
        3,
        "services.web.command",
        "command of service web must be a string, not a list",
        "`command: python3 app.py`",
    ),
    (
        "bad_port_not_integer.yaml",
        4,
        "services.web.port",
        "port of service web must be a whole number, not the text '8000'",
        "without quotes",
    ),
    (
        "bad_port_out_of_range.yaml",
        4,
        "services.web.port",
        "port of service web must be from 1 to 65535, not 70000",
        "from 1 to 65535",
    ),
    (
        "bad_port_boolean.yaml",
        4,
        "services.web.port",
        "port of service web must be a whole number, not the boolean true",
        "`port: 8080`",
    ),
    (
        "bad_replicas_zero.yaml",
        4,
        "services.web.replicas",
        "replicas of service web must be from 1 to 20, not 0",
        "from 1 to 20",
    ),
    (
        "bad_env_nested.yaml",
        6,
        "services.web.env.SETTINGS",
        "SETTINGS in env of service web must be a string, number or boolean, not a mapping",
        "write one value on the line",
    ),
    (
        "bad_env_null.yaml",
        5,
        "services.web.env.API_TOKEN",
        "API_TOKEN in env of service web must be a string, number or boolean, not empty",
        "use '' for an empty value",
    ),
    (
        "bad_env_key.yaml",
        5,
        "services.web.env.LOG-LEVEL",
        "'LOG-LEVEL' in env of service web is not a valid variable name",
        "use letters, digits and '_'",
    ),
    (
        "bad_health_path.yaml",
        5,
        "services.web.health.path",
        "path of the health check of web must start with '/', not 'healthz'",
        "`path: /healthz`",
    ),
    (
        "bad_duration_zero.yaml",
        5,
        "services.catalog.health.start_timeout",
        "start_timeout of the health check of catalog must be more than 0, not 0s",
        "`start_timeout: 30s`",
    ),
    (
        "bad_build_no_context.yaml",
        3,
        "services.web.build.context",
        "the build of service web has no context",
        "add `context:",
    ),
    (
        "bad_depends_on_mapping.yaml",
        4,
        "services.frontend.depends_on",
        "depends_on of service frontend must be a list of service names, not a mapping",
        "`depends_on: [catalog]`",
    ),
    (
        "bad_depends_on_unknown.yaml",
        4,
        "services.frontend.depends_on[1]",
        "frontend depends on 'pricng', which is not a service",
        "did you mean 'pricing'?",
    ),
    (
        "bad_depends_on_self.yaml",
        5,
        "services.web.depends_on[0]",
        "web depends on itself",
        "remove 'web' from the depends_on of web",
    ),
    (
        "bad_depends_on_duplicate.yaml",
        6,
        "services.web.depends_on[1]",
        "service web lists 'db' twice in depends_on",
        "remove the repeated name",
    ),
    (
        "bad_dependency_cycle.yaml",
        4,
        "services.frontend.depends_on[0]",
        "depends_on forms a cycle: frontend -> catalog -> pricing -> frontend",
        "remove one of these dependencies",
    ),
    (
        "bad_expose_conflict.yaml",
        7,
        "services.admin.expose",
        "admin exposes host port 8080, which frontend already exposes on line 4",
        "give admin or frontend another `expose:` port",
    ),
    (
        "bad_service_nothing_to_run.yaml",
        2,
        "services.web",
        "web has nothing to run",
        NOTHING_TO_RUN,
    ),
    (
        "bad_version_nothing_to_run.yaml",
        6,
        "services.catalog.versions.v2",
        "version v2 of catalog has nothing to run",
        NOTHING_TO_RUN,
    ),
    (
        "bad_version_name.yaml",
        5,
        "services.catalog.versions.default",
        "the version name 'default' of catalog is reserved",
        "e.g. 'v1'",
    ),
    (
        "bad_versions_empty.yaml",
        4,
        "services.catalog.versions",
        "versions of service catalog is empty",
        "add at least one version",
    ),
    (
        "bad_policy_unknown_service.yaml",
        5,
        "policies.pricng",
        "there is a policy for 'pricng', which is not a service",
        "did you mean 'pricing'?",
    ),
    (
        "bad_duration.yaml",
        6,
        "policies.catalog.timeout",
        "timeout of the policy for catalog must be a duration, not the text 'banana'",
        "write it like 250ms, 2s or 1m",
    ),
    (
        "bad_retry_on.yaml",
        8,
        "policies.catalog.retries.retry_on[1]",
        "retry_on of the retries of the policy for catalog has an unknown condition 'timeout'",
        "use some of: 5xx, gateway-error, reset, connect-failure",
    ),
    (
        "bad_retry_on_typo.yaml",
        9,
        "policies.catalog.retries.retry_on[1]",
        "retry_on of the retries of the policy for catalog has an unknown condition 'gateway-eror'",
        "did you mean 'gateway-error'?",
    ),
    (
        "bad_attempts.yaml",
        6,
        "policies.catalog.retries.attempts",
        "attempts of the retries of the policy for catalog must be from 1 to 10, not 11",
        "`attempts: 3`",
    ),
    (
        "bad_breaker_percent.yaml",
        7,
        "policies.catalog.breaker.max_ejection_percent",
        "max_ejection_percent of the breaker of the policy for catalog must be from 0 to 100, "
        "not 150",
        "from 0 to 100",
    ),
    (
        "bad_breaker_panic_threshold.yaml",
        8,
        "policies.catalog.breaker.panic_threshold",
        "panic_threshold of the breaker of the policy for catalog must be from 0 to 100, not -5",
        "e.g. `panic_threshold: 50`",
    ),
    (
        "bad_breaker_panic_threshold_text.yaml",
        6,
        "policies.catalog.breaker.panic_threshold",
        "panic_threshold of the breaker of the policy for catalog must be a number, "
        "not the text 'half'",
        "write a number without quotes",
    ),
    (
        "bad_split_sum.yaml",
        9,
        "policies.catalog.split",
        "the split weights of the policy for catalog add up to 90, not 100",
        "add up to 100",
    ),
    (
        "bad_split_unknown_version.yaml",
        11,
        "policies.catalog.split.v3",
        "the split of the policy for catalog names version 'v3', which catalog does not have",
        "the versions of catalog are: 'v1', 'v2'",
    ),
    (
        "bad_split_unversioned.yaml",
        6,
        "policies.catalog.split",
        "the policy for catalog splits traffic between versions, but catalog has no versions",
        "declare `versions:` under service catalog, or remove `split:`",
    ),
    # YAML's .nan and .inf are numbers to PyYAML, and none devmesh takes.
    (
        "bad_duration_nan.yaml",
        6,
        "policies.catalog.timeout",
        "timeout of the policy for catalog must be a duration, not NaN",
        "write it like 250ms, 2s or 1m",
    ),
    (
        "bad_fault_percent_infinity.yaml",
        9,
        "policies.web.faults[0].abort.percent",
        "percent of the abort of fault 1 of the policy for web must be a number, not infinity",
        "`percent: 10`",
    ),
    (
        "bad_fault_bandwidth_infinity.yaml",
        7,
        "policies.web.faults[0].bandwidth",
        "bandwidth of fault 1 of the policy for web must be a size, not -infinity",
        "64kB",
    ),
    (
        "bad_split_weight_nan.yaml",
        8,
        "policies.catalog.split.v1",
        "the weight of v1 in the split of the policy for catalog must be a number, not NaN",
        "`v1: 50`",
    ),
    (
        "bad_env_nan.yaml",
        5,
        "services.web.env.RATIO",
        "RATIO in env of service web is NaN, which is not a number",
        "quote the value to pass it as text",
    ),
    (
        "bad_replicas_nan.yaml",
        4,
        "services.web.replicas",
        "replicas of service web must be a whole number, not NaN",
        "`replicas: 2`",
    ),
]
MULTI = {"bad_many_problems.yaml", "bad_split_weight.yaml"}


@pytest.mark.parametrize(("name", "line", "path", "message", "hint"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_reports_its_one_problem(
    name: str, line: int, path: str, message: str, hint: str
) -> None:
    [problem] = problems_in(name)
    assert problem.file == CONFIGS / name
    assert (problem.line, problem.path, problem.message) == (line, path, message)
    assert problem.hint is not None
    assert hint in problem.hint


def test_every_bad_file_is_tested() -> None:
    files = {path.name for path in CONFIGS.glob("bad_*.yaml")}
    assert files == {b[0] for b in BAD} | MULTI


def test_problem_renders_file_line_path_message_and_hint() -> None:
    [problem] = problems_in("bad_depends_on_unknown.yaml")
    assert str(problem) == (
        f"{CONFIGS / 'bad_depends_on_unknown.yaml'}:4: services.frontend.depends_on[1]: "
        "frontend depends on 'pricng', which is not a service — did you mean 'pricing'?"
    )


def test_all_problems_are_reported_at_once_in_line_order() -> None:
    problems = problems_in("bad_many_problems.yaml")
    assert [(p.line, p.path) for p in problems] == [
        (5, "services.frontend.port"),
        (6, "services.frontend.depends_on[0]"),
        (8, "services.catalog.comand"),
        (12, "services.pricing.expose"),
        (15, "policies.catalog.timeout"),
    ]
    assert problems[1].hint == "did you mean 'catalog'?"


def test_config_error_message_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        load_project(CONFIGS / "bad_many_problems.yaml")
    text = str(caught.value)
    assert text.startswith("5 problems in the configuration:\n")
    assert "did you mean 'command'?" in text
    assert caught.value.exit_code == 2


def test_each_wrong_split_weight_is_reported() -> None:
    problems = problems_in("bad_split_weight.yaml")
    assert [(p.line, p.path) for p in problems] == [
        (8, "policies.catalog.split.v1"),
        (9, "policies.catalog.split.v2"),
    ]
    assert problems[1].message == (
        "the weight of v2 in the split of the policy for catalog must be from 0 to 100, not -50"
    )


HUGE = 10**400
"""An integer JSON or YAML may hold and no float can: it must be refused, not overflow."""


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            {"timeout": True},
            "timeout of the policy for web must be a duration, not the boolean true",
        ),
        ({"timeout": math.nan}, "timeout of the policy for web must be a duration, not NaN"),
        ({"timeout": math.inf}, "timeout of the policy for web must be a duration, not infinity"),
        (
            {"timeout": HUGE},
            "timeout of the policy for web must be a duration, not a 401-digit number",
        ),
        (
            {"breaker": {"max_ejection_percent": False}},
            "max_ejection_percent of the breaker of the policy for web must be a number, "
            "not the boolean false",
        ),
        (
            {"breaker": {"max_ejection_percent": HUGE}},
            "max_ejection_percent of the breaker of the policy for web must be a number, "
            "not a 401-digit number",
        ),
        (
            {"retries": {"attempts": True}},
            "attempts of the retries of the policy for web must be a whole number, "
            "not the boolean true",
        ),
        (
            {"pool": {"max_connections": math.inf}},
            "max_connections of the connection pool of the policy for web must be a whole "
            "number, not infinity",
        ),
        (
            {"faults": [{"delay": {"fixed": "1s", "percent": True}}]},
            "percent of the delay of fault 1 of the policy for web must be a number, "
            "not the boolean true",
        ),
        (
            {"faults": [{"delay": {"fixed": "1s", "jitter": -math.inf}}]},
            "jitter of the delay of fault 1 of the policy for web must be a duration, "
            "not -infinity",
        ),
        (
            {"faults": [{"abort": {"http_status": True}}]},
            "http_status of the abort of fault 1 of the policy for web must be a whole number, "
            "not the boolean true",
        ),
        (
            {"faults": [{"bandwidth": HUGE}]},
            "bandwidth of fault 1 of the policy for web must be a size, not a 401-digit number",
        ),
        (
            {"faults": [{"hang": math.nan}]},
            "hang of fault 1 of the policy for web must be a duration, not NaN",
        ),
    ],
)
def test_a_number_that_is_none_is_refused_where_one_is_asked(
    setting: dict[str, object], message: str
) -> None:
    """What the API hands the validators too: booleans, NaN, infinities and integers too large
    for a float are each refused in a sentence, never taken (true as 1) nor overflowing."""
    [problem] = problems_of({"services": {"web": {"image": "w:1"}}, "policies": {"web": setting}})
    assert problem.message == message


# --- good configs -----------------------------------------------------------


@pytest.fixture
def full() -> Project:
    return load_project(CONFIGS / "good_full.yaml")


def test_full_config_resolves_services_in_file_order(full: Project) -> None:
    assert full.name == "shop"
    assert full.source == CONFIGS / "good_full.yaml"
    assert list(full.services) == ["frontend", "catalog", "pricing"]
    frontend = full.services["frontend"]
    assert not frontend.versioned
    assert (frontend.port, frontend.expose, frontend.depends_on) == (8000, 8080, ("catalog",))
    assert frontend.health == Health(path="/healthz", start_timeout=10.0)
    assert frontend.line == 4
    [default] = frontend.versions
    assert default.name == DEFAULT_VERSION
    assert default.command == "python3 frontend.py"
    assert default.env == {"LOG_LEVEL": "debug", "WORKERS": "4", "DEBUG": "true"}
    assert default.line == 4


def test_versions_merge_service_settings(full: Project) -> None:
    catalog = full.services["catalog"]
    assert catalog.versioned
    v1, v2 = catalog.versions
    assert (v1.name, v1.command, v1.replicas, v1.line) == ("v1", "python3 catalog.py", 3, 22)
    assert v1.env == {"LOG_LEVEL": "info", "CATALOG_VERSION": "v1"}
    assert (v2.name, v2.command, v2.replicas, v2.line) == ("v2", "python3 catalog_v2.py", 1, 24)
    assert v2.env == {"LOG_LEVEL": "info", "CATALOG_VERSION": "v2"}
    assert catalog.version("v2") is v2
    assert catalog.health == Health()


def test_docker_settings_of_the_project_and_of_a_service(full: Project) -> None:
    assert full.base_image == "python:3.12-slim"
    assert full.interception_of("frontend") == "transparent"
    assert full.interception_of("pricing") == "env"


def test_build_mapping(full: Project) -> None:
    [version] = full.services["pricing"].versions
    assert version.image == "shop/pricing:dev"
    assert version.build == Build(
        context="./pricing", dockerfile="Dockerfile.dev", args={"PYTHON_VERSION": "3.12"}
    )


def test_policy_values_are_in_seconds(full: Project) -> None:
    assert full.policy("catalog") == Policy(
        timeout=2.0,
        retries=RetryPolicy(
            attempts=3,
            per_try_timeout=0.5,
            retry_on=("5xx", "gateway-error", "reset", "connect-failure"),
        ),
        breaker=BreakerPolicy(
            consecutive_5xx=5,
            interval=10.0,
            base_ejection_time=30.0,
            max_ejection_time=300.0,
            max_ejection_percent=12.5,
            panic_threshold=0.0,
        ),
        split={"v1": 90.0, "v2": 10.0},
    )
    assert full.policy("pricing").timeout == 1.5
    assert full.policy("frontend") == Policy()


def test_dump_parse_round_trip(full: Project) -> None:
    dumped = dump_project(full)
    assert parse_project(dumped) == without_lines(full)
    assert parse_project(json.loads(json.dumps(dumped))) == without_lines(full)


def test_dump_writes_config_shaped_values(full: Project) -> None:
    dumped = dump_project(full)
    services = dumped["services"]
    assert isinstance(services, dict)
    assert services["frontend"]["command"] == "python3 frontend.py"
    assert set(services["catalog"]["versions"]) == {"v1", "v2"}
    assert "command" not in services["catalog"]
    assert services["pricing"]["build"]["dockerfile"] == "Dockerfile.dev"
    policies = dumped["policies"]
    assert isinstance(policies, dict)
    assert policies["catalog"]["timeout"] == "2s"
    assert policies["catalog"]["retries"]["per_try_timeout"] == "500ms"
    assert policies["catalog"]["breaker"]["max_ejection_time"] == "5m"


def test_dump_keeps_durations_exact_when_text_would_round() -> None:
    project = parse_project(
        {"services": {"web": {"command": "x"}}, "policies": {"web": {"timeout": 1234567.125}}}
    )
    assert parse_project(dump_project(project)) == project


def test_minimal_config_gets_defaults_and_folder_name(tmp_path: Path) -> None:
    folder = tmp_path / "My Shop"
    folder.mkdir()
    path = folder / "devmesh.yaml"
    path.write_text((CONFIGS / "good_minimal.yaml").read_text())
    project = load_project(path)
    assert project.name == "my-shop"
    assert load_project(path, default_name="other").name == "other"
    web = project.services["web"]
    assert web.versions[0].replicas == 1
    assert (web.port, web.expose, web.depends_on, web.health) == (None, None, (), Health())
    assert project.policies == {}
    assert parse_project(dump_project(project)) == without_lines(project)


def test_anchors_and_merge_keys_are_allowed() -> None:
    project = load_project(CONFIGS / "good_anchors.yaml")
    api, worker = project.services.values()
    assert api.versions[0].command == "python3 app.py"
    assert api.versions[0].env == {"PYTHONUNBUFFERED": "1"}
    assert worker.versions[0].command == "python3 worker.py"
    assert worker.line == 10


def test_empty_values_mean_not_given() -> None:
    project = parse_project(
        {"services": {"web": {"command": "x", "env": None, "health": None, "port": None}}}
    )
    assert project.services["web"].port is None
    assert project.services["web"].versions[0].env == {}


def test_build_as_a_string_is_the_context() -> None:
    project = parse_project({"services": {"web": {"build": "./web"}}})
    assert project.services["web"].versions[0].build == Build(context="./web")


def test_version_keys_win_over_service_keys() -> None:
    project = parse_project(
        {
            "services": {
                "web": {
                    "image": "web:1",
                    "replicas": 2,
                    "env": {"A": "service", "B": "service"},
                    "versions": {"blue": None, "green": {"image": "web:2", "env": {"B": 2}}},
                }
            },
            "policies": {"web": {"split": {"blue": 99.5, "green": 0.5}}},
        }
    )
    blue, green = project.services["web"].versions
    assert (blue.image, blue.replicas, blue.env) == ("web:1", 2, {"A": "service", "B": "service"})
    assert (green.image, green.replicas, green.env) == ("web:2", 2, {"A": "service", "B": "2"})


def test_parse_project_without_lines_or_file() -> None:
    [problem] = problems_of({"services": {"web": {"command": "x", "replicas": True}}})
    assert (problem.file, problem.line) == (None, None)
    assert str(problem) == (
        "<config>: services.web.replicas: replicas of service web must be a whole number, "
        "not the boolean true — write a whole number without quotes, e.g. `replicas: 2`"
    )


@pytest.mark.parametrize("data", [[], "services", None])
def test_parse_project_needs_a_mapping(data: object) -> None:
    [problem] = problems_of(data)
    assert problem.path == ""
    assert problem.message.startswith("the configuration must be a mapping")


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (
            {"services": {"web": {"command": "x", "expose": 80.5}}},
            "services.web.expose",
            "expose of service web must be a whole number, not 80.5",
        ),
        (
            {"services": {"web": {"command": "x"}}, "policies": {"web": {"timeout": -1}}},
            "policies.web.timeout",
            "timeout of the policy for web must be more than 0, not -1",
        ),
        (
            {
                "services": {"web": {"command": "x", "versions": {"a": {}}}},
                "policies": {"web": {"split": {"a": True}}},
            },
            "policies.web.split.a",
            "the weight of a in the split of the policy for web must be a number, "
            "not the boolean true",
        ),
        (
            {"services": {"web": {"command": " "}}},
            "services.web.command",
            "command of service web is empty",
        ),
        (
            {"services": {"web": {"command": "x", "depends_on": [1]}}},
            "services.web.depends_on[0]",
            "item 1 of depends_on of service web must be a name, not 1",
        ),
        (
            {"services": {"web": {"command": "x"}}, "policies": {"web": {"retries": 3}}},
            "policies.web.retries",
            "the retries of the policy for web must be a mapping, not 3",
        ),
        (
            {"services": {"web": {"command": "x", "versions": {"V1": {}}}}},
            "services.web.versions.V1",
            "version name 'V1' of web is not valid",
        ),
        (
            {"services": {"web": {"build": ["."]}}},
            "services.web.build",
            "build of service web must be a folder or a mapping, not a list",
        ),
        (
            {"services": [{"web": {"command": "x"}}]},
            "services",
            "services must be a mapping of service names to settings, not a list",
        ),
    ],
)
def test_data_problems(data: object, path: str, message: str) -> None:
    [problem] = problems_of(data)
    assert (problem.path, problem.message) == (path, message)
    assert problem.hint


def test_no_cascade_from_a_wrongly_named_service() -> None:
    [problem] = problems_of(
        {"services": {"Web": {"command": "x"}, "api": {"command": "y", "depends_on": ["Web"]}}}
    )
    assert problem.path == "services.Web"


def test_top_level_x_keys_are_ignored_like_in_compose() -> None:
    [problem] = problems_of(
        {"x-common": {"anything": 1}, "servces": {}, "services": {"web": {"command": "x"}}}
    )
    assert problem.message == "unknown key 'servces' in the project"
    assert problem.hint == "did you mean 'services'?"
    [problem] = problems_of({"x-common": 1, "zzz": 1, "services": {"web": {"command": "x"}}})
    assert problem.hint == (
        "the keys the project accepts are: authorization, base_image, interception, mtls, name, "
        "policies, services"
    )


def test_no_cascade_from_empty_services() -> None:
    [problem] = problems_of({"services": {}, "policies": {"web": {"timeout": "1s"}}})
    assert problem.message == "services is empty"


def test_invalid_default_name_is_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_project({"services": {"web": {"command": "x"}}}, default_name="Bad Name")
    assert caught.value.problems[0].hint == "add `name: bad-name`"


# --- files ------------------------------------------------------------------


def test_find_config(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        find_config(tmp_path)
    assert str(tmp_path) in caught.value.message
    assert caught.value.hint is not None
    assert "devmesh init" in caught.value.hint
    (tmp_path / "devmesh.yml").write_text("services: {}\n")
    assert find_config(tmp_path) == tmp_path / "devmesh.yml"
    (tmp_path / "devmesh.yaml").write_text("services: {}\n")
    with pytest.raises(UsageError, match=r"both devmesh\.yaml and devmesh\.yml"):
        find_config(tmp_path)
    (tmp_path / "devmesh.yml").unlink()
    assert find_config(tmp_path) == tmp_path / "devmesh.yaml"


def test_load_project_on_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "devmesh.yaml"
    with pytest.raises(UsageError) as caught:
        load_project(path)
    assert not isinstance(caught.value, ConfigError)
    assert str(path) in caught.value.message
    assert caught.value.hint is not None
    assert "devmesh init" in caught.value.hint


def test_load_project_on_a_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a folder"):
        load_project(tmp_path)


def test_load_project_on_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "devmesh.yaml"
    path.write_bytes(b"services:\n  web:\n    command: caf\xe9\n")
    [problem] = problems_in_path(path)
    assert (problem.line, problem.message) == (3, "the file is not UTF-8 text")


def test_load_project_accepts_a_byte_order_mark_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "devmesh.yaml"
    path.write_bytes(b"\xef\xbb\xbfservices:\r\n  web:\r\n    command: x\r\n    port: 0\r\n")
    [problem] = problems_in_path(path)
    assert (problem.line, problem.path) == (4, "services.web.port")


def problems_in_path(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_project(path)
    return caught.value.problems


def test_a_tcp_service_round_trips_and_http_is_the_default() -> None:
    data = {
        "name": "shop",
        "services": {
            "web": {"image": "shop/web:dev", "port": 8000},
            "db": {"image": "postgres:16", "port": 5432, "expose": 5432, "protocol": "tcp"},
        },
    }
    project = parse_project(data)
    assert project.services["web"].protocol == "http"
    assert project.services["db"].protocol == "tcp"
    dumped = dump_project(project)
    services = dumped["services"]
    assert isinstance(services, dict)
    assert services["db"]["protocol"] == "tcp"
    assert "protocol" not in services["web"]
    assert parse_project(dumped) == project


def test_faults_lb_and_pool_of_a_policy(full: Project) -> None:
    policy = full.policy("pricing")
    assert policy.lb == "least-request"
    assert policy.pool == PoolPolicy(max_requests=100)
    first, second, third = policy.faults
    assert first == FaultSpec(
        delay=0.2,
        jitter=0.05,
        delay_percent=50.0,
        abort_status=503,
        abort_percent=12.5,
        match=FaultMatch(path="/prices", method="GET", headers={"x-test": "1"}, source="catalog"),
    )
    assert second == FaultSpec(abort_reset=True, bandwidth=64_000)
    assert third == FaultSpec(hang=5.0)

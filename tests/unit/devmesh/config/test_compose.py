"""devmesh.config.compose: a compose file as devmesh config, with a warning for what is left out.

Files under ``compose/`` hold the cases where line numbers matter; the rest
are small inline mappings given to the pure ``compose_to_config``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from devmesh.config import dump_project, load_project, parse_project
from devmesh.config.compose import (
    COMPOSE_NAMES,
    Imported,
    compose_project,
    compose_to_config,
    find_compose,
    import_compose,
    load_compose,
    render_devmesh_yaml,
)
from devmesh.config.model import Build
from devmesh.config.report import source_path
from devmesh.errors import ConfigError, Problem, UsageError

COMPOSE = Path(__file__).parent / "compose"
RECIPE = Path(__file__).parents[4] / "recipes" / "compose" / "docker-compose.yml"
FILE = Path("docker-compose.yml")


def copy(name: str, folder: Path) -> Path:
    """``compose/<name>`` as ``folder/docker-compose.yml``, away from any ``.env``."""
    target = folder / "docker-compose.yml"
    shutil.copyfile(COMPOSE / name, target)
    return target


def convert(services: dict[str, object], **top: object) -> Imported:
    data = {**top, "services": services}
    return compose_to_config(data, file=FILE, environ={}, default_name="demo")


def service(compose: dict[str, object]) -> tuple[dict[str, object], list[str]]:
    """The devmesh service that one Compose service ``web`` becomes, and the warnings."""
    imported = convert({"web": {"image": "nginx", **compose}})
    services = imported.data["services"]
    assert isinstance(services, dict)
    result = services["web"]
    assert isinstance(result, dict)
    parse_project(imported.data)  # whatever it becomes is valid devmesh config
    return {k: v for k, v in result.items() if k != "image"}, imported.warnings


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_compose(path)
    return caught.value.problems


def problems_in(imported: Imported) -> list[Problem]:
    """Every problem ``compose_project`` reports for ``imported``: conversion's and validation's."""
    with pytest.raises(ConfigError) as caught:
        compose_project(imported, FILE)
    return caught.value.problems


# --- finding the file -------------------------------------------------------------------


def test_find_compose_follows_composes_order_of_preference(tmp_path: Path) -> None:
    assert find_compose(tmp_path) is None
    for name in reversed(COMPOSE_NAMES):
        (tmp_path / name).write_text("services: {}\n")
        assert find_compose(tmp_path) == tmp_path / name
    assert COMPOSE_NAMES[0] == "compose.yaml"


def test_find_compose_ignores_a_folder_of_that_name(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").mkdir()
    (tmp_path / "docker-compose.yml").write_text("services: {}\n")
    assert find_compose(tmp_path) == tmp_path / "docker-compose.yml"


# --- a whole file -------------------------------------------------------------------------


def test_full_file_becomes_the_equivalent_project(tmp_path: Path) -> None:
    path = copy("full.yml", tmp_path)
    project, warnings = load_compose(path)
    assert warnings == [
        "docker-compose.yml:36: services.db looks like PostgreSQL (not HTTP), so devmesh runs db "
        "with `protocol: tcp`: its traffic passes through the mesh untouched and uncounted — "
        "set `protocol: http` for it in devmesh.yaml if it speaks HTTP"
    ]
    assert project.source == path
    assert dump_project(project) == {
        "name": "shop",
        "services": {
            "web": {
                "command": "python3 app.py --greeting 'hello world'",
                "build": "./web",
                "env": {
                    "API_URL": "http://api:8000",
                    "DEBUG": "true",
                    "WORKERS": "2",
                    "LOG_LEVEL": "debug",
                },
                "port": 8000,
                "expose": 8080,
                "depends_on": ["api"],
            },
            "api": {
                "command": "python3 -m api --port 8000",
                "build": {
                    "context": "./api",
                    "dockerfile": "Dockerfile.dev",
                    "args": {"PYTHON_VERSION": "3.12"},
                },
                "env": {"MODE": "fast", "EMPTY": ""},
                "replicas": 2,
                "port": 8000,
                "depends_on": ["db"],
            },
            "db": {"image": "postgres:16", "port": 5432, "expose": 5433, "protocol": "tcp"},
        },
    }


def test_the_project_points_at_lines_of_the_compose_file(tmp_path: Path) -> None:
    project, _ = load_compose(copy("full.yml", tmp_path))
    assert project.services["web"].line == 7
    assert project.services["api"].versions[0].line == 19
    assert project.where("services.web.expose") == "docker-compose.yml:11"
    assert project.where("services.web.env.API_URL") == "docker-compose.yml:14"
    assert project.where("services.api.env.MODE") == "docker-compose.yml:29"
    assert project.where("services.api.replicas") == "docker-compose.yml:35"
    assert project.where("services.api.depends_on[0]") == "docker-compose.yml:32"
    assert project.where("services.db.port") == "docker-compose.yml:39"


def test_without_a_name_the_project_is_named_after_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "My_Shop"
    folder.mkdir()
    (folder / "compose.yaml").write_text("services:\n  web:\n    image: nginx\n")
    project, _ = load_compose(folder / "compose.yaml")
    assert project.name == "my-shop"
    project, _ = load_compose(folder / "compose.yaml", default_name="other")
    assert project.name == "other"


def test_the_recipe_loads_with_its_one_warning() -> None:
    project, warnings = load_compose(RECIPE)
    assert list(project.services) == ["web", "api"]
    web, api = project.services["web"], project.services["api"]
    assert (web.port, web.expose, web.depends_on) == (8000, 8081, ("api",))
    assert web.versions[0].build == Build(context="./web")
    assert (api.port, api.expose) == (8000, None)
    assert warnings == [
        "docker-compose.yml:13: services.web.restart is not supported by devmesh and is ignored"
    ]


def test_recipe_dockerfiles_take_devmeshs_base_image() -> None:
    for name in ("web", "api"):
        lines = (RECIPE.parent / name / "Dockerfile").read_text().splitlines()
        assert lines[:2] == [
            "ARG DEVMESH_BASE_IMAGE=python:3.12-slim",
            "FROM ${DEVMESH_BASE_IMAGE}",
        ]


# --- warnings ---------------------------------------------------------------------------


def test_each_unsupported_key_gets_one_warning_with_file_line_and_path(tmp_path: Path) -> None:
    _, warnings = load_compose(copy("unsupported.yml", tmp_path))
    assert warnings[0].startswith("docker-compose.yml:2: services.db looks like postgres")
    assert warnings[1:] == [
        "docker-compose.yml:4: services.db.container_name is not supported by devmesh and is "
        "ignored",
        "docker-compose.yml:5: services.db.volumes is not supported by devmesh and is ignored",
        "docker-compose.yml:7: services.db.healthcheck is not supported by devmesh and is "
        "ignored — devmesh checks readiness itself; for an HTTP check add "
        "`health: {path: /healthz}` to the service in devmesh.yaml",
        "docker-compose.yml:9: services.db.restart is not supported by devmesh and is ignored",
        "docker-compose.yml:10: services.db.env_file is not supported by devmesh and is ignored "
        "— copy its variables into `environment:`",
        "docker-compose.yml:12: volumes is not supported by devmesh and is ignored",
        "docker-compose.yml:14: networks is not supported by devmesh and is ignored — services "
        "reach each other by name through the mesh",
        "docker-compose.yml:16: configs is not supported by devmesh and is ignored",
        "docker-compose.yml:18: secrets is not supported by devmesh and is ignored",
        "docker-compose.yml:20: include is not supported by devmesh and is ignored",
    ]


def test_version_and_extension_keys_are_ignored_silently() -> None:
    imported = convert({"web": {"image": "nginx", "x-owner": "me"}}, version="3", **{"x-a": 1})
    assert imported.warnings == []
    assert imported.data == {"name": "demo", "services": {"web": {"image": "nginx"}}}


def test_a_warning_without_lines_names_the_file() -> None:
    _, warnings = service({"restart": "always"})
    assert warnings == [
        "docker-compose.yml: services.web.restart is not supported by devmesh and is ignored"
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("entrypoint", ["sh"]),
        ("networks", ["back"]),
        ("labels", {"a": "b"}),
        ("user", "1000"),
        ("working_dir", "/app"),
        ("profiles", ["debug"]),
        ("extends", {"service": "base"}),
    ],
)
def test_other_service_keys_warn(key: str, value: object) -> None:
    result, warnings = service({key: value})
    assert result == {}
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"docker-compose.yml: services.web.{key} is not supported by devmesh and is ignored"
    )


# --- ports and expose ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("8080:80", {"port": 80, "expose": 8080}),
        ("127.0.0.1:8080:80", {"port": 80, "expose": 8080}),
        ("localhost:8080:80", {"port": 80, "expose": 8080}),
        ("8080:80/tcp", {"port": 80, "expose": 8080}),
        ({"target": 80, "published": 8080}, {"port": 80, "expose": 8080}),
        (
            {"target": 80, "published": "8080", "host_ip": "127.0.0.1", "protocol": "tcp"},
            {"port": 80, "expose": 8080},
        ),
    ],
)
def test_the_first_port_gives_port_and_expose(entry: object, expected: object) -> None:
    assert service({"ports": [entry]}) == (expected, [])


@pytest.mark.parametrize("entry", ["80", 80, "127.0.0.1::80", {"target": 80}])
def test_a_port_without_host_port_gives_only_port(entry: object) -> None:
    result, warnings = service({"ports": [entry]})
    assert result == {"port": 80}
    assert warnings == [
        "docker-compose.yml: services.web.ports[0] has no host port, so devmesh does not expose "
        "the service on the host — add `expose: <host port>` to it in devmesh.yaml to reach it "
        "from the host"
    ]


@pytest.mark.parametrize(
    ("entry", "shown"),
    [
        ("0.0.0.0:8080:80", "0.0.0.0"),
        ("[::]:8080:80", "[::]"),
        ({"target": 80, "published": 8080, "host_ip": "0.0.0.0"}, "0.0.0.0"),
    ],
)
def test_an_explicit_other_host_ip_is_named(entry: object, shown: str) -> None:
    result, warnings = service({"ports": [entry]})
    assert result == {"port": 80, "expose": 8080}
    assert warnings == [
        f"docker-compose.yml: services.web.ports[0] binds to {shown}, but devmesh binds exposed "
        "ports to 127.0.0.1 only"
    ]


def test_udp_ranges_and_further_ports_warn(tmp_path: Path) -> None:
    project, warnings = load_compose(copy("ports.yml", tmp_path))
    assert (project.services["web"].port, project.services["web"].expose) == (80, 8080)
    assert warnings == [
        "docker-compose.yml:5: services.web.ports[0] is a udp port, which devmesh does not "
        "carry, and is ignored — the mesh routes HTTP over TCP",
        "docker-compose.yml:6: services.web.ports[1] binds to 0.0.0.0, but devmesh binds "
        "exposed ports to 127.0.0.1 only",
        "docker-compose.yml:7: services.web.ports[2] is ignored: devmesh gives each service one "
        "port (here 80) and exposes at most that one on the host",
        "docker-compose.yml:8: services.web.ports[3] is ignored: devmesh gives each service one "
        "port (here 80) and exposes at most that one on the host",
    ]


def test_a_port_range_alone_warns() -> None:
    result, warnings = service({"ports": ["8000-8001:8000-8001"]})
    assert result == {}
    assert warnings == [
        "docker-compose.yml: services.web.ports[0] is a port range, which devmesh does not "
        "support, and is ignored"
    ]


def test_long_port_keys_devmesh_does_not_know_warn() -> None:
    result, warnings = service({"ports": [{"target": 80, "published": 8080, "mode": "host"}]})
    assert result == {"port": 80, "expose": 8080}
    assert warnings == [
        "docker-compose.yml: services.web.ports[0].mode is not supported by devmesh and is ignored"
    ]


@pytest.mark.parametrize("entry", ["8000", 8000, "8000/tcp"])
def test_expose_gives_port_without_ports(entry: object) -> None:
    assert service({"expose": [entry]}) == ({"port": 8000}, [])


def test_expose_agreeing_with_ports_is_silent_and_another_port_warns() -> None:
    result, warnings = service({"ports": ["8080:80"], "expose": ["80", "9000"]})
    assert result == {"port": 80, "expose": 8080}
    assert warnings == [
        "docker-compose.yml: services.web.expose[1] is ignored: devmesh gives each service one "
        "port (here 80) and exposes at most that one on the host"
    ]


def test_a_port_devmesh_cannot_read_is_an_error(tmp_path: Path) -> None:
    path = copy("bad_port.yml", tmp_path)
    [problem] = problems_of(path)
    assert (problem.file, problem.line, problem.path) == (path, 5, "services.web.ports[0]")
    assert problem.message == "'http:80' is not a port entry devmesh understands"
    assert problem.hint is not None
    assert '"8080:8000"' in problem.hint


# --- the other service keys ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("python3 app.py --debug", "python3 app.py --debug"),
        (["python3", "app.py", "--name", "two words"], "python3 app.py --name 'two words'"),
        (["sh", "-c", "echo $$HOME"], "sh -c 'echo $HOME'"),
        (["sleep", 10], "sleep 10"),
    ],
)
def test_command(command: object, expected: str) -> None:
    assert service({"command": command}) == ({"command": expected}, [])


@pytest.mark.parametrize(
    "environment",
    [
        {"A": "1", "B": 2, "C": True, "D": ""},
        ["A=1", "B=2", "C=true", "D="],
    ],
)
def test_environment_as_mapping_or_list(environment: object) -> None:
    result, _ = service({"environment": environment})
    project = parse_project(convert({"web": {"image": "x", "environment": environment}}).data)
    assert project.services["web"].versions[0].env == {"A": "1", "B": "2", "C": "true", "D": ""}
    assert set(result) == {"env"}


def test_environment_value_with_equals_signs() -> None:
    assert service({"environment": ["URL=http://x/?a=b"]})[0] == {"env": {"URL": "http://x/?a=b"}}


@pytest.mark.parametrize("environment", [["TOKEN", "UNSET"], {"TOKEN": None, "UNSET": None}])
def test_a_bare_variable_comes_from_the_environment_or_warns(environment: object) -> None:
    data = {"services": {"web": {"image": "nginx", "environment": environment}}}
    imported = compose_to_config(data, file=FILE, environ={"TOKEN": "s3cret"}, default_name="d")
    assert imported.data["services"] == {"web": {"image": "nginx", "env": {"TOKEN": "s3cret"}}}
    where = "[1]" if isinstance(environment, list) else ".UNSET"
    assert imported.warnings == [
        f"docker-compose.yml: services.web.environment{where} gives UNSET no value and UNSET is "
        "not set, so it is left out — set UNSET in the environment or in .env next to "
        "docker-compose.yml"
    ]


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        ("./web", "./web"),
        ({"context": "./web"}, {"context": "./web"}),
        ({"dockerfile": "Dockerfile.dev"}, {"context": ".", "dockerfile": "Dockerfile.dev"}),
        ({"context": ".", "args": {"V": 1}}, {"context": ".", "args": {"V": 1}}),
        (
            {"context": ".", "args": ["V=1", "W=x=y"]},
            {"context": ".", "args": {"V": "1", "W": "x=y"}},
        ),
    ],
)
def test_build(build: object, expected: object) -> None:
    imported = convert({"web": {"build": build}})
    assert imported.data["services"] == {"web": {"build": expected}}
    assert imported.warnings == []
    parse_project(imported.data)


def test_other_build_keys_warn() -> None:
    imported = convert({"web": {"build": {"context": ".", "target": "prod", "cache_from": []}}})
    assert imported.data["services"] == {"web": {"build": {"context": "."}}}
    assert imported.warnings == [
        "docker-compose.yml: services.web.build.target is not supported by devmesh and is ignored",
        "docker-compose.yml: services.web.build.cache_from is not supported by devmesh and is "
        "ignored",
    ]


def test_depends_on_list() -> None:
    imported = convert({"web": {"image": "a", "depends_on": ["api"]}, "api": {"image": "b"}})
    assert imported.data["services"] == {
        "web": {"image": "a", "depends_on": ["api"]},
        "api": {"image": "b"},
    }


def test_depends_on_mapping_and_its_conditions(tmp_path: Path) -> None:
    project, warnings = load_compose(copy("depends_on.yml", tmp_path))
    assert project.services["web"].depends_on == ("api", "migrate")
    assert project.where("services.web.depends_on[1]") == "docker-compose.yml:7"
    assert warnings == [
        "docker-compose.yml:8: services.web.depends_on.migrate.condition is "
        "service_completed_successfully, which devmesh does not support — devmesh starts web "
        "once migrate is ready instead",
        "docker-compose.yml:9: services.web.depends_on.migrate.restart is not supported by "
        "devmesh and is ignored",
    ]


@pytest.mark.parametrize(
    ("compose", "replicas", "warnings"),
    [
        ({"deploy": {"replicas": 3}}, 3, []),
        ({"scale": 2}, 2, []),
        ({"deploy": {"replicas": "4"}}, 4, []),
        (
            {"deploy": {"replicas": 3}, "scale": 2},
            3,
            [
                "docker-compose.yml: services.web.scale is ignored: "
                "deploy.replicas gives the replicas"
            ],
        ),
        (
            {"deploy": {"replicas": 2, "resources": {"limits": {"cpus": "0.5"}}}},
            2,
            [
                "docker-compose.yml: services.web.deploy.resources is not supported by devmesh "
                "and is ignored"
            ],
        ),
    ],
)
def test_replicas(compose: dict[str, object], replicas: int, warnings: list[str]) -> None:
    assert service(compose) == ({"replicas": replicas}, warnings)


def test_what_devmesh_rejects_is_its_config_error_at_the_compose_line(tmp_path: Path) -> None:
    path = copy("bad_replicas.yml", tmp_path)
    [problem] = problems_of(path)
    assert (problem.file, problem.line, problem.path) == (path, 5, "services.web.deploy.replicas")
    assert problem.message == "replicas of service web must be from 1 to 20, not 0"


def test_a_service_with_nothing_to_run_is_left_to_the_validator(tmp_path: Path) -> None:
    path = copy("bad_nothing_to_run.yml", tmp_path)
    [problem] = problems_of(path)
    assert (problem.file, problem.line, problem.path) == (path, 4, "services.worker")
    assert problem.message == "worker has nothing to run"


# --- keys Compose does not know, and everything at once ---------------------------------


def test_every_problem_of_a_compose_file_is_reported_at_once(tmp_path: Path) -> None:
    path = copy("bad_many_problems.yml", tmp_path)
    problems = problems_of(path)
    assert [(p.file, p.line, p.path) for p in problems] == [
        (path, 5, "services.web.enviroment"),
        (path, 12, "services.api.depends_on[0]"),
        (path, 14, "services.api.deploy.replicas"),
        (path, 16, "services.api.ports[0]"),
        (path, 18, "services.db.imag"),
        (path, 19, "volumse"),
    ]
    assert [p.hint for p in problems if p.path.endswith(("enviroment", "imag", "volumse"))] == [
        "did you mean 'environment'?",
        "did you mean 'image'?",
        "did you mean 'volumes'?",
    ]
    assert not any("restart" in p.path for p in problems), "a key Compose knows only warns"
    assert not any("nothing to run" in p.message for p in problems), "db's typo says it all"


def test_a_top_level_key_compose_does_not_know_is_an_error(tmp_path: Path) -> None:
    path = copy("bad_top_level_typo.yml", tmp_path)
    problems = problems_of(path)
    assert [(p.line, p.path) for p in problems] == [(1, "services"), (2, "servics")]
    assert problems[0].message == "the compose file has no services"
    assert problems[1].message == "unknown key 'servics' in the compose file"
    assert problems[1].hint == "did you mean 'services'?"


@pytest.mark.parametrize(
    ("compose", "path", "owner", "hint"),
    [
        ({"enviroment": {"A": "1"}}, "services.web.enviroment", "service web", "'environment'"),
        ({"comand": "sh"}, "services.web.comand", "service web", "'command'"),
        ({"restrat": "always"}, "services.web.restrat", "service web", "'restart'"),
        (
            {"build": {"context": ".", "dockerfiel": "D"}},
            "services.web.build.dockerfiel",
            "the build of web",
            "'dockerfile'",
        ),
        (
            {"deploy": {"replica": 2}},
            "services.web.deploy.replica",
            "the deploy of web",
            "'replicas'",
        ),
        (
            {"ports": [{"target": 80, "publshed": 8080}]},
            "services.web.ports[0].publshed",
            "port entry 1 of web",
            "'published'",
        ),
        (
            {"depends_on": {"api": {"conditon": "service_started"}}},
            "services.web.depends_on.api.conditon",
            "the dependency of web on api",
            "'condition'",
        ),
        ({"frobnicate": True}, "services.web.frobnicate", "service web", "check its spelling"),
    ],
)
def test_a_key_compose_does_not_know_is_an_error_with_the_key_it_may_mean(
    compose: dict[str, object], path: str, owner: str, hint: str
) -> None:
    imported = convert({"web": {"image": "nginx", **compose}, "api": {"image": "api"}})
    [problem] = problems_in(imported)
    key = path.rpartition(".")[2]
    assert (problem.path, problem.message) == (path, f"unknown key '{key}' in {owner}")
    assert problem.hint is not None
    assert hint in problem.hint
    assert not any(key in warning for warning in imported.warnings), "an error, not a warning"


@pytest.mark.parametrize(
    "compose",
    [
        {"restart": "always", "volumes": ["./data:/data"], "x-note": "hi"},
        {"build": {"context": ".", "target": "dev", "x-note": "hi"}},
        {"deploy": {"replicas": 2, "resources": {}}},
        {"ports": [{"target": 80, "published": 8080, "mode": "host", "app_protocol": "http"}]},
        {"depends_on": {"api": {"condition": "service_started", "required": True}}},
    ],
)
def test_keys_compose_knows_and_devmesh_ignores_stay_warnings(compose: dict[str, object]) -> None:
    imported = convert({"web": {"image": "nginx", **compose}, "api": {"image": "api"}})
    assert imported.problems == []
    assert imported.warnings
    assert all("is not supported by devmesh and is ignored" in w for w in imported.warnings)
    assert not any("x-note" in w for w in imported.warnings), "extensions pass silently"
    compose_project(imported, FILE)


def test_a_port_clash_names_the_ports_of_the_compose_file(tmp_path: Path) -> None:
    path = copy("bad_port_clash.yml", tmp_path)
    [problem] = problems_of(path)
    assert (problem.line, problem.path) == (11, "services.api.ports[0]")
    assert problem.message == "api exposes host port 8080, which web already exposes on line 7"
    assert problem.hint == "give api or web another host port in `ports:`"


def test_a_tcp_service_run_twice_with_a_host_port_is_told_to_drop_it_from_ports() -> None:
    imported = convert({"db": {"image": "postgres:16", "ports": ["5433:5432"], "scale": 2}})
    [problem] = problems_in(imported)
    assert problem.path == "services.db.ports[0]"
    assert (
        problem.hint == "run one instance of it, or leave the host port out of its `ports:` entry"
    )


@pytest.mark.parametrize(
    ("compose", "path", "message", "hint"),
    [
        (
            {"environment": "MODE=dev"},
            "services.web.environment",
            "environment of service web must be a mapping or a list, not the text 'MODE=dev'",
            "write it like `environment: {MODE: dev}` or `environment: [MODE=dev]`",
        ),
        (
            {"build": {"context": ".", "args": 5}},
            "services.web.build.args",
            "build.args of service web must be a mapping or a list, not 5",
            "write it like `args: {MODE: dev}` or `args: [MODE=dev]`",
        ),
        (
            {"ports": ["99999:80"]},
            "services.web.ports[0]",
            "'99999:80' is not a port entry devmesh understands",
            'write it like "8080:8000", "8000" or {target: 8000, published: 8080} '
            "(ports from 1 to 65535)",
        ),
        (
            {"expose": ["0"]},
            "services.web.expose[0]",
            "'0' is not a port entry devmesh understands",
            'write it like "8000" or "8000/tcp" (a port from 1 to 65535)',
        ),
        (
            {"deploy": {"replicas": 30}},
            "services.web.deploy.replicas",
            "replicas of service web must be from 1 to 20, not 30",
            "use a whole number from 1 to 20, e.g. `deploy: {replicas: 2}`",
        ),
    ],
)
def test_a_wrong_value_is_told_in_the_compose_files_keys(
    compose: dict[str, object], path: str, message: str, hint: str
) -> None:
    [problem] = problems_in(convert({"web": {"image": "nginx", **compose}}))
    assert (problem.path, problem.message, problem.hint) == (path, message, hint)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("services.web.expose", "services.web.ports[0]"),
        ("services.web.env.MODE", "services.web.environment.MODE"),
        ("services.web.depends_on[0]", "services.web.depends_on.db"),
        ("services.web", "services.web"),
        ("policies.web.timeout", "policies.web.timeout"),
    ],
)
def test_source_path_names_a_converted_path_as_the_compose_file_does(
    path: str, expected: str
) -> None:
    sources = {
        "": "",
        "services.web": "services.web",
        "services.web.expose": "services.web.ports[0]",
        "services.web.env": "services.web.environment",
        "services.web.depends_on[0]": "services.web.depends_on.db",
    }
    assert source_path(path, sources) == expected


def test_a_problem_of_a_converted_value_is_at_its_compose_path() -> None:
    imported = convert({"web": {"image": "nginx", "environment": {"BAD-NAME": "1"}}})
    [problem] = problems_in(imported)
    assert problem.path == "services.web.environment.BAD-NAME"


# --- names and invalid files ------------------------------------------------------------


def test_a_service_name_devmesh_cannot_use_is_an_error_per_name(tmp_path: Path) -> None:
    path = copy("bad_names.yml", tmp_path)
    problems = problems_of(path)
    assert [(p.file, p.line, p.path) for p in problems] == [
        (path, 2, "services.my_db"),
        (path, 4, "services.Web"),
    ]
    assert problems[0].message == "service name 'my_db' cannot be used by devmesh"
    assert problems[0].hint is not None
    assert problems[0].hint.startswith("rename it in the compose file, e.g. 'my-db'")
    assert problems[1].hint is not None
    assert "e.g. 'web'" in problems[1].hint


def test_a_project_name_compose_allows_is_made_valid() -> None:
    imported = convert({"web": {"image": "nginx"}}, name="my_shop")
    assert imported.data["name"] == "my-shop"
    assert imported.warnings == [
        "docker-compose.yml: name 'my_shop' is not a valid devmesh project name: it becomes "
        "'my-shop'"
    ]


@pytest.mark.parametrize(
    ("name", "line", "path", "message"),
    [
        ("bad_no_services.yml", 1, "services", "the compose file has no services"),
        (
            "bad_services_list.yml",
            2,
            "services",
            "services must be a mapping of service names to settings, not a list",
        ),
        (
            "bad_service_not_mapping.yml",
            2,
            "services.web",
            "service web must be a mapping, not the text 'nginx'",
        ),
    ],
)
def test_invalid_compose_files(
    tmp_path: Path, name: str, line: int, path: str, message: str
) -> None:
    file = copy(name, tmp_path)
    [problem] = problems_of(file)
    assert (problem.file, problem.line, problem.path, problem.message) == (
        file,
        line,
        path,
        message,
    )
    assert problem.hint


@pytest.mark.parametrize("data", [None, ["web"], "services"])
def test_data_that_is_not_a_mapping_is_an_error(data: object) -> None:
    imported = compose_to_config(data, file=FILE, lines={"": 1}, default_name="demo")
    [problem] = problems_in(imported)
    assert (problem.file, problem.line) == (FILE, 1)
    assert problem.message.startswith("a compose file must be a mapping")


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_compose(tmp_path / "docker-compose.yml")


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_bytes(b"services:\n  web:\n    image: \xff\n")
    [problem] = problems_of(path)
    assert (problem.line, problem.message) == (3, "the file is not UTF-8 text")


# --- interpolation --------------------------------------------------------------------


ENVIRON = {"SET": "value", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$SET", "value"),
        ("${SET}", "value"),
        ("a-${SET}-b", "a-value-b"),
        ("$SET.txt", "value.txt"),
        ("${UNSET:-default}", "default"),
        ("${EMPTY:-default}", "default"),
        ("${SET:-default}", "value"),
        ("${UNSET-default}", "default"),
        ("${EMPTY-default}", ""),
        ("${UNSET:-${SET}}", "value"),
        ("${UNSET:-a ${UNSET2:-b}}", "a b"),
        ("${SET:+other}", "other"),
        ("${EMPTY:+other}", ""),
        ("${EMPTY+other}", "other"),
        ("$$SET", "$SET"),
        ("cost: 5$", "cost: 5$"),
        ("$1 and $ alone", "$1 and $ alone"),
    ],
)
def test_interpolation(text: str, expected: str) -> None:
    data = {"services": {"web": {"image": "nginx", "command": text}}}
    imported = compose_to_config(data, file=FILE, environ=ENVIRON, default_name="d")
    assert imported.data["services"] == {"web": {"image": "nginx", "command": expected}}
    assert imported.warnings == []


def test_an_unset_variable_becomes_empty_with_a_warning() -> None:
    result, warnings = service({"command": "echo ${NOPE} $NOPE2"})
    assert result == {"command": "echo  "}
    hint = "in the environment or in .env next to docker-compose.yml"
    assert warnings == [
        "docker-compose.yml: services.web.command uses $NOPE, which is not set, so it is "
        f"replaced by an empty string — set NOPE {hint}",
        "docker-compose.yml: services.web.command uses $NOPE2, which is not set, so it is "
        f"replaced by an empty string — set NOPE2 {hint}",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "${TOKEN:?give a token}",
            "the value needs the variable TOKEN (give a token), which is not set",
        ),
        ("${TOKEN?}", "the value needs the variable TOKEN, which is not set"),
        ("${1}", "the value holds '${1}', which is not a valid variable reference"),
        ("${SET", "the value holds '${SET', which is not a valid variable reference"),
    ],
)
def test_a_required_variable_or_a_malformed_reference_is_an_error(text: str, message: str) -> None:
    data = {"services": {"web": {"image": "nginx", "command": text}}}
    imported = compose_to_config(
        data, file=FILE, lines={"services.web.command": 3}, default_name="d"
    )
    [problem] = problems_in(imported)
    assert (problem.line, problem.path, problem.message) == (3, "services.web.command", message)


def test_variables_come_from_the_shell_then_from_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = copy("interpolation.yml", tmp_path)
    (tmp_path / ".env").write_text(
        "# variables for compose\n"
        "TAG=1.27\n"
        "export FROM_DOTENV='from .env'\n"
        'FROM_SHELL="loses to the shell"\n'
        "REPLICAS=3 # a comment\n"
        "not a variable\n"
    )
    for name in ("PROJECT", "TAG", "GREETING", "MISSING", "WEB_PORT", "FROM_DOTENV", "REPLICAS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FROM_SHELL", "from the shell")
    monkeypatch.setenv("WEB_PORT", "9090")
    project, warnings = load_compose(path)
    assert dump_project(project) == {
        "name": "shop",
        "services": {
            "web": {
                "command": "echo $HOME hi ",
                "image": "nginx:1.27",
                "env": {"FROM_SHELL": "from the shell", "FROM_DOTENV": "from .env"},
                "replicas": 3,
                "port": 80,
                "expose": 9090,
            }
        },
    }
    assert warnings == [
        ".env:6: the line is not KEY=VALUE and is ignored",
        "docker-compose.yml:5: services.web.command uses $MISSING, which is not set, so it is "
        "replaced by an empty string — set MISSING in the environment or in .env next to "
        "docker-compose.yml",
    ]


def test_unsupported_keys_are_not_interpolated() -> None:
    _, warnings = service({"volumes": ["${DATA_DIR}:/data"]})
    assert warnings == [
        "docker-compose.yml: services.web.volumes is not supported by devmesh and is ignored"
    ]


# --- rendering devmesh.yaml -----------------------------------------------------------


@pytest.mark.parametrize("name", ["full.yml", "unsupported.yml", "ports.yml", "depends_on.yml"])
def test_rendered_devmesh_yaml_loads_back_to_the_same_project(tmp_path: Path, name: str) -> None:
    path = copy(name, tmp_path)
    project, warnings = load_compose(path)
    imported = import_compose(path)
    assert imported.warnings == warnings
    target = tmp_path / "devmesh.yaml"
    target.write_text(render_devmesh_yaml(imported, Path("docker-compose.yml")))
    assert dump_project(load_project(target)) == dump_project(project)


def test_import_compose_is_the_unvalidated_conversion(tmp_path: Path) -> None:
    path = copy("bad_nothing_to_run.yml", tmp_path)
    imported = import_compose(path, default_name="shop")
    assert imported.data == {
        "name": "shop",
        "services": {"web": {"image": "nginx"}, "worker": {"env": {"MODE": "batch"}}},
    }
    assert imported.lines["services.worker.env.MODE"] == 6


def test_rendered_devmesh_yaml_has_a_header_and_the_warnings_as_comments() -> None:
    imported = convert(
        {"web": {"image": "nginx", "ports": ["8080:80"], "restart": "always"}, "db": {"image": "p"}}
    )
    text = render_devmesh_yaml(imported, Path("docker-compose.yml"))
    assert text == (
        "# Generated by devmesh from docker-compose.yml.\n"
        "# What devmesh left out or changed on the way:\n"
        "# docker-compose.yml: services.web.restart is not supported by devmesh and is ignored\n"
        "\n"
        "name: demo\n"
        "\n"
        "services:\n"
        "  web:\n"
        "    image: nginx\n"
        "    port: 80\n"
        "    expose: 8080\n"
        "\n"
        "  db:\n"
        "    image: p\n"
    )


def test_rendered_values_that_look_like_other_types_stay_strings(tmp_path: Path) -> None:
    environment = {"A": "yes", "B": "1.0", "C": "2024-01-01", "D": "line\nbreak", "E": "# x"}
    imported = convert({"web": {"image": "nginx", "environment": environment}})
    target = tmp_path / "devmesh.yaml"
    target.write_text(render_devmesh_yaml(imported, FILE))
    assert load_project(target).services["web"].versions[0].env == environment


@pytest.mark.parametrize(
    ("compose", "what"),
    [
        ({"image": "redis:7"}, "redis"),
        ({"image": "docker.io/library/mysql:8@sha256:abc"}, "mysql"),
        ({"image": "shop/cache:1", "ports": ["6380:6379"]}, "Redis"),
        ({"image": "shop/db:1", "expose": ["5432"]}, "PostgreSQL"),
    ],
)
def test_a_database_or_broker_runs_as_tcp_with_a_warning(
    compose: dict[str, object], what: str
) -> None:
    data, warnings = service(compose)
    assert data["protocol"] == "tcp"
    assert len(warnings) == 1
    assert f"looks like {what} (not HTTP)" in warnings[0]


def test_an_http_service_keeps_the_default_protocol() -> None:
    data, warnings = service({"image": "nginx:1", "ports": ["8080:80"]})
    assert "protocol" not in data
    assert warnings == []

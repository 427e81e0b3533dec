"""devmesh.runtime.docker.topology and labels: the containers a project runs as, without Docker."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest

from devmesh.config import parse_project
from devmesh.config.model import Project
from devmesh.plan import plan_instances
from devmesh.runtime.docker import labels
from devmesh.runtime.docker.topology import (
    ContainerSpec,
    MeshSettings,
    desired_containers,
    gateway_spec,
    init_entrypoint,
    init_spec,
    redirect_ports,
    service_spec,
    sidecar_spec,
)
from proxy.bootstrap import AUTO, BOOTSTRAP_ENV, TOKEN_ENV, Bootstrap

SETTINGS = MeshSettings(
    project_dir="/home/dev/shop",
    network="shop-mesh",
    sidecar_image="devmesh/sidecar:0123abcd",
    controlplane_url="http://host.docker.internal:41000",
    token="s3cret-token",
)

SHOP: dict[str, Any] = {
    "name": "shop",
    "services": {
        "frontend": {
            "image": "shop/frontend:dev",
            "command": "python3 frontend.py --greeting 'hello world'",
            "port": 8000,
            "expose": 8080,
            "env": {"LOG_LEVEL": "debug"},
            "health": {"path": "/healthz"},
        },
        "catalog": {
            "image": "shop/catalog:dev",
            "port": 8001,
            "versions": {"v1": {}, "v2": {"replicas": 2}},
        },
        "pricing": {"image": "shop/pricing:dev"},
        "admin": {"image": "shop/admin:dev", "port": 9000, "expose": 9090},
    },
}
INSTANCES = ["frontend-1", "catalog-v1-1", "catalog-v2-1", "catalog-v2-2", "pricing-1", "admin-1"]


def shop(change: dict[str, Any] | None = None, **top: Any) -> Project:
    """The shop project, with ``change`` merged into its services and ``top`` at the top level."""
    data = copy.deepcopy(SHOP)
    for name, settings in (change or {}).items():
        data["services"].setdefault(name, {}).update(settings)
    data.update(top)
    return parse_project(data)


def image_ids(project: Project, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """An image id per instance (``overrides`` by instance id)."""
    ids = {spec.id: f"sha256:{spec.id}" for spec in plan_instances(project)}
    ids.update(overrides or {})
    return ids


def containers(
    project: Project, settings: MeshSettings = SETTINGS, images: dict[str, str] | None = None
) -> dict[str, ContainerSpec]:
    return {c.name: c for c in desired_containers(project, image_ids(project, images), settings)}


def sidecar(project: Project, instance: str, settings: MeshSettings = SETTINGS) -> ContainerSpec:
    spec = next(s for s in plan_instances(project) if s.id == instance)
    return sidecar_spec(project, spec, settings)


def service(project: Project, instance: str, settings: MeshSettings = SETTINGS) -> ContainerSpec:
    return containers(project, settings)[f"{project.name}-{instance}"]


def bootstrap_of(spec: ContainerSpec) -> Bootstrap:
    return Bootstrap.from_dict(json.loads(spec.env[BOOTSTRAP_ENV]))


def options(command: list[str] | None) -> dict[str, str]:
    """``["--a", "1", "--b", "2"]`` as ``{"--a": "1", "--b": "2"}``."""
    assert command is not None
    assert len(command) % 2 == 0, command
    return dict(zip(command[::2], command[1::2], strict=True))


# -- which containers ----------------------------------------------------------


def test_one_sidecar_and_one_service_container_per_instance_then_one_gateway() -> None:
    specs = desired_containers(shop(), image_ids(shop()), SETTINGS)
    per_instance = [(s.instance, s.role) for s in specs[:-1]]
    assert per_instance == [(i, role) for i in INSTANCES for role in ("sidecar", "service")]
    assert specs[-1].role == "gateway"
    assert specs[-1].name == "shop-ingress"
    assert len({s.name for s in specs}) == len(specs)


def test_no_gateway_when_no_service_is_exposed() -> None:
    project = shop({"frontend": {"expose": None}, "admin": {"expose": None}})
    specs = desired_containers(project, image_ids(project), SETTINGS)
    assert [s.role for s in specs] == ["sidecar", "service"] * len(INSTANCES)
    assert gateway_spec(project, SETTINGS) is None


def test_container_names_say_project_instance_and_role() -> None:
    names = set(containers(shop()))
    assert {"shop-catalog-v2-2-sidecar", "shop-catalog-v2-2", "shop-pricing-1-sidecar"} <= names


# -- sidecars ------------------------------------------------------------------


def test_sidecar_of_a_versioned_service_answers_to_service_version_and_instance() -> None:
    spec = sidecar(shop(), "catalog-v2-1")
    assert set(spec.aliases) == {"catalog", "catalog-v2", "catalog-v2-1"}


def test_sidecar_of_an_unversioned_service_has_no_version_alias() -> None:
    spec = sidecar(shop(), "pricing-1")
    assert set(spec.aliases) == {"pricing", "pricing-1"}
    assert not any("default" in alias for alias in spec.aliases)


def test_sidecar_owns_the_namespace_on_the_project_network() -> None:
    spec = sidecar(shop(), "catalog-v1-1")
    assert spec.network == SETTINGS.network
    assert spec.join is None
    assert spec.image == SETTINGS.sidecar_image
    assert spec.ports == {}  # only the gateway publishes anything


def test_sidecar_bootstrap_in_its_env_says_who_it_is_and_where_to_connect() -> None:
    spec = sidecar(shop(), "frontend-1")
    boot = bootstrap_of(spec)
    assert (boot.service, boot.version, boot.instance) == ("frontend", "default", "frontend-1")
    assert boot.role == "sidecar"
    assert boot.control_plane == SETTINGS.controlplane_url
    assert boot.app_port == 8000
    assert boot.health_path == "/healthz"
    assert boot.advertise_host == AUTO
    assert boot.token_file is None
    assert spec.env[TOKEN_ENV] == SETTINGS.token


def test_sidecar_bootstrap_of_a_service_without_port_or_health_path() -> None:
    boot = bootstrap_of(sidecar(shop(), "pricing-1"))
    assert (boot.service, boot.version, boot.instance) == ("pricing", "default", "pricing-1")
    assert boot.app_port is None
    assert boot.health_path is None


def test_sidecar_bootstrap_names_the_version() -> None:
    boot = bootstrap_of(sidecar(shop(), "catalog-v2-2"))
    assert (boot.service, boot.version, boot.instance) == ("catalog", "v2", "catalog-v2-2")
    assert boot.app_port == 8001


# -- service containers --------------------------------------------------------


def test_service_container_joins_its_sidecars_namespace() -> None:
    specs = containers(shop())
    spec = specs["shop-catalog-v2-1"]
    assert spec.join == "shop-catalog-v2-1-sidecar"
    assert spec.join in specs
    assert spec.network is None
    assert spec.aliases == ()
    assert spec.ports == {}


def test_service_container_runs_the_image_given_for_its_instance() -> None:
    specs = containers(shop(), images={"catalog-v2-2": "sha256:rebuilt"})
    assert specs["shop-catalog-v2-2"].image == "sha256:rebuilt"
    assert specs["shop-catalog-v2-1"].image == "sha256:catalog-v2-1"


def test_service_env_is_its_own_plus_who_it_is_and_no_proxy_when_transparent() -> None:
    env = dict(service(shop(), "frontend-1").env)
    assert env == {
        "LOG_LEVEL": "debug",
        "PORT": "8000",  # its port, as the local runtime gives $PORT
        "DEVMESH_SERVICE": "frontend",
        "DEVMESH_VERSION": "default",
        "DEVMESH_INSTANCE": "frontend-1",
    }


def test_service_env_names_the_version_of_a_versioned_instance() -> None:
    env = service(shop(), "catalog-v2-2").env
    assert env["DEVMESH_SERVICE"] == "catalog"
    assert env["DEVMESH_VERSION"] == "v2"
    assert env["DEVMESH_INSTANCE"] == "catalog-v2-2"


PROXY_KEYS = {"HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"}


def assert_proxied(spec: ContainerSpec) -> None:
    env = spec.env
    assert env["HTTP_PROXY"] == env["http_proxy"]
    assert env["HTTP_PROXY"].startswith("http://127.0.0.1:")
    no_proxy = env["NO_PROXY"].split(",")
    assert env["no_proxy"] == env["NO_PROXY"]
    assert {"localhost", "127.0.0.1"} <= set(no_proxy)


def test_project_wide_env_interception_gives_every_service_an_http_proxy() -> None:
    project = shop(interception="env")
    for instance in INSTANCES:
        assert_proxied(service(project, instance))


def test_env_interception_proxy_is_the_sidecars_outbound_port() -> None:
    project = shop(interception="env")
    proxy_port = int(service(project, "pricing-1").env["HTTP_PROXY"].rsplit(":", 1)[1])
    assert proxy_port == bootstrap_of(sidecar(project, "pricing-1")).outbound_port


def test_per_service_env_interception_applies_to_that_service_only() -> None:
    project = shop({"catalog": {"interception": "env"}})
    for instance in ("catalog-v1-1", "catalog-v2-1", "catalog-v2-2"):
        assert_proxied(service(project, instance))
    for instance in ("frontend-1", "pricing-1"):
        assert not PROXY_KEYS & set(service(project, instance).env)


def test_a_service_may_stay_transparent_in_an_env_project() -> None:
    project = shop({"pricing": {"interception": "transparent"}}, interception="env")
    assert not PROXY_KEYS & set(service(project, "pricing-1").env)
    assert_proxied(service(project, "frontend-1"))


def test_command_is_split_like_a_shell_would() -> None:
    assert service(shop(), "frontend-1").command == [
        "python3",
        "frontend.py",
        "--greeting",
        "hello world",
    ]


def test_without_command_the_image_decides_what_runs() -> None:
    assert service(shop(), "pricing-1").command is None


def test_service_container_runs_an_init_as_pid_1() -> None:
    assert service(shop(), "pricing-1").init is True


# -- gateway -------------------------------------------------------------------


def test_gateway_publishes_each_exposed_port_on_its_host_port() -> None:
    gateway = gateway_spec(shop(), SETTINGS)
    assert gateway is not None
    assert sorted(gateway.ports.values()) == [8080, 9090]
    boot = bootstrap_of(gateway)
    assert boot.role == "gateway"
    assert boot.control_plane == SETTINGS.controlplane_url
    routes = {listener.service: gateway.ports[listener.port] for listener in boot.gateway}
    assert routes == {"frontend": 8080, "admin": 9090}
    assert gateway.env[TOKEN_ENV] == SETTINGS.token


def test_gateway_is_on_the_project_network_as_the_ingress() -> None:
    gateway = gateway_spec(shop(), SETTINGS)
    assert gateway is not None
    assert gateway.network == SETTINGS.network
    assert gateway.join is None
    assert gateway.image == SETTINGS.sidecar_image
    assert (gateway.service, gateway.instance) == (labels.GATEWAY, labels.GATEWAY)


# -- init step -----------------------------------------------------------------


def test_init_step_has_net_admin_runs_as_root_and_joins_the_sidecar() -> None:
    project = shop()
    owner = sidecar(project, "catalog-v1-1")
    step = init_spec(project, owner, SETTINGS)
    assert step.role == "init"
    assert "NET_ADMIN" in step.cap_add
    assert step.user is not None
    assert step.user.split(":")[0] == "0"
    assert step.join == owner.name
    assert step.network is None
    assert step.image == SETTINGS.sidecar_image
    assert step.name not in containers(project)  # the runtime runs it, it is not kept


def test_init_step_redirects_port_80_and_every_service_port_and_names_the_app_port() -> None:
    project = shop()
    step = init_spec(project, sidecar(project, "catalog-v1-1"), SETTINGS)
    given = options(step.command)
    assert given["--redirect-ports"].split(",") == ["80", "8000", "8001", "9000"]
    assert given["--app-port"] == "8001"
    boot = bootstrap_of(sidecar(project, "catalog-v1-1"))
    assert given["--outbound-port"] == str(boot.outbound_port)
    assert given["--inbound-port"] == str(boot.inbound_port)


def test_init_step_runs_the_rust_subcommand_in_the_rust_sidecar_image() -> None:
    project = shop()
    rust = replace(SETTINGS, sidecar_image="devmesh/sidecar-rust:0123abcd")
    python_step = init_spec(project, sidecar(project, "catalog-v1-1"), SETTINGS)
    rust_step = init_spec(project, sidecar(project, "catalog-v1-1"), rust)
    assert python_step.entrypoint == ["python3", "-m", "proxy.interception"]
    assert rust_step.entrypoint == ["/usr/local/bin/devmesh-proxy", "intercept"]
    assert rust_step.command == python_step.command, "the same arguments either way"
    assert init_entrypoint("sha256:0123") == ["python3", "-m", "proxy.interception"]


def test_init_step_of_a_service_without_port_has_no_app_port() -> None:
    project = shop()
    given = options(init_spec(project, sidecar(project, "pricing-1"), SETTINGS).command)
    assert "--app-port" not in given
    assert given["--redirect-ports"] == "80,8000,8001,9000"


def test_redirect_ports_are_80_and_every_service_port_once() -> None:
    assert redirect_ports(shop()) == (80, 8000, 8001, 9000)
    assert redirect_ports(shop({"pricing": {"port": 80}, "admin": {"port": 8000}})) == (
        80,
        8000,
        8001,
    )
    no_ports = parse_project({"name": "shop", "services": {"web": {"image": "web"}}})
    assert redirect_ports(no_ports) == (80,)


# -- labels and the spec hash --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "role", "service_name", "version", "instance"),
    [
        ("shop-catalog-v2-1-sidecar", "sidecar", "catalog", "v2", "catalog-v2-1"),
        ("shop-catalog-v2-1", "service", "catalog", "v2", "catalog-v2-1"),
        ("shop-pricing-1", "service", "pricing", "default", "pricing-1"),
        ("shop-ingress", "gateway", "ingress", "default", "ingress"),
    ],
)
def test_labels_say_project_service_version_instance_role_and_hash(
    name: str, role: str, service_name: str, version: str, instance: str
) -> None:
    spec = containers(shop())[name]
    given = spec.labels()
    assert given[labels.PROJECT] == "shop"
    assert given[labels.PROJECT_DIR] == SETTINGS.project_dir
    assert given[labels.SERVICE] == service_name
    assert given[labels.VERSION] == version
    assert given[labels.INSTANCE] == instance
    assert given[labels.ROLE] == role
    assert given[labels.SPEC_HASH] == spec.spec_hash


def test_init_step_carries_the_project_labels_so_down_finds_it() -> None:
    project = shop()
    given = init_spec(project, sidecar(project, "pricing-1"), SETTINGS).labels()
    assert given[labels.PROJECT] == "shop"
    assert given[labels.PROJECT_DIR] == SETTINGS.project_dir
    assert given[labels.ROLE] == "init"
    assert given[labels.INSTANCE] == "pricing-1"


def test_the_same_project_gives_the_same_hashes() -> None:
    first = {name: spec.spec_hash for name, spec in containers(shop()).items()}
    second = {name: spec.spec_hash for name, spec in containers(shop()).items()}
    assert first == second
    assert len(set(first.values())) == len(first)


def test_an_equal_spec_has_the_same_hash() -> None:
    spec = service(shop(), "frontend-1")
    assert replace(spec, env=dict(spec.env)).spec_hash == spec.spec_hash


@pytest.mark.parametrize(
    "change",
    [
        {"env": {"LOG_LEVEL": "info"}},
        {"env": {"LOG_LEVEL": "debug", "EXTRA": "1"}},
        {"image": "sha256:other"},
        {"command": ["python3", "frontend.py"]},
        {"command": None},
        {"user": "1000:1000"},
        {"ports": {8000: 18000}},
        {"extra_labels": {labels.PROJECT: "other"}},
    ],
)
def test_any_change_of_a_spec_changes_its_hash(change: dict[str, Any]) -> None:
    spec = service(shop(), "frontend-1")
    assert replace(spec, **change).spec_hash != spec.spec_hash


def test_a_changed_env_in_the_config_changes_only_that_service_containers_hash() -> None:
    before = containers(shop())
    after = containers(shop({"pricing": {"env": {"LOG_LEVEL": "debug"}}}))
    changed = {name for name in before if before[name].spec_hash != after[name].spec_hash}
    assert changed == {"shop-pricing-1"}


def test_a_changed_command_in_the_config_changes_only_that_service_containers_hash() -> None:
    before = containers(shop())
    after = containers(shop({"frontend": {"command": "python3 frontend.py"}}))
    changed = {name for name in before if before[name].spec_hash != after[name].spec_hash}
    assert changed == {"shop-frontend-1"}


def test_a_new_image_id_changes_only_that_service_containers_hash() -> None:
    before = containers(shop())
    after = containers(shop(), images={"catalog-v1-1": "sha256:rebuilt"})
    changed = {name for name in before if before[name].spec_hash != after[name].spec_hash}
    assert changed == {"shop-catalog-v1-1"}


def test_new_redirect_ports_change_every_sidecars_hash() -> None:
    before = sidecar(shop(), "catalog-v1-1")
    after = sidecar(shop({"pricing": {"port": 8002}}), "catalog-v1-1")
    assert after.spec_hash != before.spec_hash
    assert after.labels()["devmesh.redirect-ports"] != before.labels()["devmesh.redirect-ports"]


def test_a_new_interception_mode_changes_the_sidecars_hash() -> None:
    before = sidecar(shop(), "pricing-1")
    per_service = sidecar(shop({"pricing": {"interception": "env"}}), "pricing-1")
    project_wide = sidecar(shop(interception="env"), "pricing-1")
    assert per_service.spec_hash != before.spec_hash
    assert project_wide.spec_hash != before.spec_hash
    assert per_service.labels()["devmesh.interception"] == "env"
    assert before.labels()["devmesh.interception"] == "transparent"


def test_a_new_sidecar_hash_changes_its_service_containers_hash() -> None:
    # The service container's own settings are the same; only its sidecar differs.
    moved = replace(SETTINGS, controlplane_url="http://host.docker.internal:42000")
    old_sidecar, new_sidecar = sidecar(shop(), "pricing-1"), sidecar(shop(), "pricing-1", moved)
    assert new_sidecar.spec_hash != old_sidecar.spec_hash
    instance = next(s for s in plan_instances(shop()) if s.id == "pricing-1")
    old = service_spec(shop(), instance, "sha256:p", old_sidecar, SETTINGS)
    new = service_spec(shop(), instance, "sha256:p", new_sidecar, SETTINGS)
    assert new.labels()["devmesh.sidecar"] == new_sidecar.spec_hash
    assert old.labels()["devmesh.sidecar"] == old_sidecar.spec_hash
    assert new.spec_hash != old.spec_hash


def test_a_new_health_path_changes_that_sidecar_and_its_service_container() -> None:
    before = containers(shop())
    after = containers(shop({"pricing": {"health": {"path": "/ready"}}}))
    changed = {name for name in before if before[name].spec_hash != after[name].spec_hash}
    assert changed == {"shop-pricing-1-sidecar", "shop-pricing-1"}


# -- names (labels.py) ---------------------------------------------------------


def test_container_names() -> None:
    assert labels.container_name("shop", "catalog-v1-1", "service") == "shop-catalog-v1-1"
    assert labels.container_name("shop", "catalog-v1-1", "sidecar") == "shop-catalog-v1-1-sidecar"
    assert labels.container_name("shop", "catalog-v1-1", "init") == "shop-catalog-v1-1-init"
    assert labels.container_name("shop", "whatever", "gateway") == "shop-ingress"


def test_network_name() -> None:
    assert labels.network_name("shop") == "shop-mesh"


def test_image_names_carry_the_version_only_for_versioned_services() -> None:
    assert labels.image_name("shop", "catalog", "v2", True) == "shop-catalog:v2"
    assert labels.image_name("shop", "pricing", "default", False) == "shop-pricing:latest"


def test_project_filter_selects_by_the_project_label() -> None:
    assert labels.project_filter("shop") == {"label": ["devmesh.project=shop"]}


def test_a_tcp_service_is_published_by_its_sidecar_and_its_traffic_not_redirected() -> None:
    project = parse_project(
        {
            "name": "shop",
            "services": {
                "web": {"image": "shop/web:1", "port": 8000, "expose": 8080},
                "db": {"image": "postgres:16", "port": 5432, "expose": 5432, "protocol": "tcp"},
            },
        }
    )
    assert redirect_ports(project) == (80, 8000), "a database's port is not sent to the HTTP proxy"
    specs = {s.name: s for s in desired_containers(project, image_ids(project), SETTINGS)}
    assert specs["shop-db-1-sidecar"].ports == {5432: 5432}
    gateway = specs["shop-ingress"]
    assert gateway.ports == {15080: 8080}, "the HTTP gateway does not take the tcp port"
    step = init_spec(project, specs["shop-db-1-sidecar"], SETTINGS)
    assert step.command is not None
    assert "--app-port" not in step.command, "inbound tcp is not redirected to the HTTP listener"
    assert specs["shop-db-1"].env["PORT"] == "5432"

"""The keys the Compose specification knows, to tell a key devmesh ignores from a typo.

A key Compose knows but devmesh does not carry over is a warning (see
``compose``); a key Compose does not know either is an error, as it is for
Compose itself, with the known key it is most likely a typo of. The lists
follow the specification's schema (``compose-spec.json``); keys starting with
``x-`` are extensions, allowed everywhere (``validate_shape.EXTENSION_PREFIX``).
"""

from __future__ import annotations

TOP_KEYS = frozenset(
    (
        "version",
        "name",
        "include",
        "services",
        "models",
        "networks",
        "volumes",
        "secrets",
        "configs",
    )
)

SERVICE_KEYS = frozenset(
    (
        "annotations",
        "attach",
        "blkio_config",
        "build",
        "cap_add",
        "cap_drop",
        "cgroup",
        "cgroup_parent",
        "command",
        "configs",
        "container_name",
        "cpu_count",
        "cpu_percent",
        "cpu_period",
        "cpu_quota",
        "cpu_rt_period",
        "cpu_rt_runtime",
        "cpu_shares",
        "cpus",
        "cpuset",
        "credential_spec",
        "depends_on",
        "deploy",
        "develop",
        "device_cgroup_rules",
        "devices",
        "dns",
        "dns_opt",
        "dns_search",
        "domainname",
        "entrypoint",
        "env_file",
        "environment",
        "expose",
        "extends",
        "external_links",
        "extra_hosts",
        "gpus",
        "group_add",
        "healthcheck",
        "hostname",
        "image",
        "init",
        "ipc",
        "isolation",
        "label_file",
        "labels",
        "links",
        "logging",
        "mac_address",
        "mem_limit",
        "mem_reservation",
        "mem_swappiness",
        "memswap_limit",
        "models",
        "network_mode",
        "networks",
        "oom_kill_disable",
        "oom_score_adj",
        "pid",
        "pids_limit",
        "platform",
        "ports",
        "post_start",
        "pre_stop",
        "privileged",
        "profiles",
        "provider",
        "pull_policy",
        "pull_refresh_after",
        "read_only",
        "restart",
        "runtime",
        "scale",
        "secrets",
        "security_opt",
        "shm_size",
        "stdin_open",
        "stop_grace_period",
        "stop_signal",
        "storage_opt",
        "sysctls",
        "tmpfs",
        "tty",
        "ulimits",
        "use_api_socket",
        "user",
        "userns_mode",
        "uts",
        "volumes",
        "volumes_from",
        "working_dir",
    )
)

BUILD_KEYS = frozenset(
    (
        "additional_contexts",
        "args",
        "cache_from",
        "cache_to",
        "context",
        "dockerfile",
        "dockerfile_inline",
        "entitlements",
        "extra_hosts",
        "isolation",
        "labels",
        "network",
        "no_cache",
        "platforms",
        "privileged",
        "provenance",
        "pull",
        "sbom",
        "secrets",
        "shm_size",
        "ssh",
        "tags",
        "target",
        "ulimits",
    )
)

DEPLOY_KEYS = frozenset(
    (
        "endpoint_mode",
        "labels",
        "mode",
        "placement",
        "replicas",
        "resources",
        "restart_policy",
        "rollback_config",
        "update_config",
    )
)

DEPENDENCY_KEYS = frozenset(("condition", "required", "restart"))
"""The keys of one dependency in the long syntax of ``depends_on``."""

PORT_KEYS = frozenset(
    ("target", "published", "host_ip", "protocol", "mode", "name", "app_protocol")
)
"""The keys of one ``ports`` entry in the long syntax."""

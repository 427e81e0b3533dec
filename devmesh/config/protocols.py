"""Telling a service that does not speak HTTP (a database, a broker) by its port or image.

Used when importing a compose file, where nothing says what a service speaks:
a service that looks like one of these gets ``protocol: tcp`` (with a warning),
so that its clients' traffic is not sent to the mesh's HTTP proxy.
"""

from __future__ import annotations

TCP_PORTS = {
    5432: "PostgreSQL",
    3306: "MySQL",
    6379: "Redis",
    27017: "MongoDB",
    11211: "memcached",
    5672: "RabbitMQ",
    9092: "Kafka",
    2181: "ZooKeeper",
    9042: "Cassandra",
    1433: "SQL Server",
    1521: "Oracle",
    4222: "NATS",
    26257: "CockroachDB",
}
TCP_IMAGES = frozenset(
    {
        "postgres",
        "mysql",
        "mariadb",
        "redis",
        "valkey",
        "mongo",
        "memcached",
        "rabbitmq",
        "kafka",
        "zookeeper",
        "cassandra",
        "nats",
        "cockroach",
    }
)


def not_http(port: int | None, image: str) -> str | None:
    """What the service looks like (``PostgreSQL``, ``redis``) if it is not HTTP, else ``None``."""
    if port is not None and port in TCP_PORTS:
        return TCP_PORTS[port]
    name = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    return name if name in TCP_IMAGES else None

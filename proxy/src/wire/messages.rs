//! The control stream's messages, both ways: JSON text frames tagged by `type`.
//!
//! Sidecar -> control plane ([`ToControl`]): `hello`, `health`, `telemetry`, `ack`,
//! `nack`, `breakers`, `identity-ack`, `leaving`, `held`, `released`.
//! Control plane -> sidecar ([`FromControl`]): `snapshot`, `identity`, `hold`, `release`.
//! The shapes are those of `proxy/control.py` and `devmesh/controlplane/sidecars.py`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::invalid::Invalid;

/// A proxy's health as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Starting,
    Ready,
    Unhealthy,
}

/// Health with what was seen (`{"state": "ready", "detail": "..."}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub state: HealthState,
    pub detail: String,
}

/// Who says hello: the node part of a hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub service: String,
    pub version: String,
    pub instance: String,
    pub role: String,
    /// `host:port` of the inbound listener other sidecars call; `null` if none.
    pub inbound: Option<String>,
    /// How the app's health is checked, in words (`TCP connect to 127.0.0.1:8000`).
    pub health_check: String,
}

/// A message from the sidecar to the control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ToControl {
    /// The first message of each link.
    Hello {
        node: Node,
        snapshot_version: u64,
        health: Health,
    },
    /// The health changed (or the link is new).
    Health(Health),
    /// Request records, and how many were dropped since the last batch.
    Telemetry { records: Vec<Value>, dropped: u64 },
    /// A snapshot taken.
    Ack { version: u64 },
    /// A snapshot refused; the previous one stays. `version`: what the snapshot said
    /// its version was (any JSON, `null` if it said none).
    Nack {
        #[serde(default)]
        version: Value,
        error: String,
    },
    /// The breaker of every destination.
    Breakers { breakers: Map<String, Value> },
    /// An identity installed: its certificate's fingerprint.
    IdentityAck { fingerprint: String },
    /// The sidecar is stopping: take it out of routing now.
    Leaving,
    /// The answer to a hold: calls still in flight to the app.
    Held { in_flight: u64 },
    /// A hold ended (by a release, or by itself).
    Released,
}

impl ToControl {
    /// The frame's text, compact as the Python sends it.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("a message always serialises")
    }
}

/// An identity the control plane issued this sidecar's service (key included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub spiffe_id: String,
    /// PEM.
    pub cert: String,
    /// PEM, the private key.
    pub key: String,
    /// PEM, the project's CA.
    pub ca: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<f64>,
    /// Seconds since the epoch.
    pub not_after: f64,
    /// The certificate's SHA-256 fingerprint, lower-case hex.
    pub fingerprint: String,
}

/// A message from the control plane to the sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum FromControl {
    /// A snapshot to take (validated by `wire::snapshot`, then acked or nacked).
    Snapshot {
        #[serde(default)]
        snapshot: Value,
    },
    /// An identity to install.
    Identity(Identity),
    /// Hold calls to the app (it is about to restart); answer `held`.
    Hold,
    /// Let the held calls go on; answer `released`.
    Release,
}

/// What a frame from the control plane turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Message(FromControl),
    /// Not JSON, not an object, or a type this sidecar does not know: ignored.
    Ignored(&'static str),
    /// A known type (`kind`) with a bad shape; `error` says what is wrong.
    Malformed {
        kind: &'static str,
        error: Invalid,
    },
}

/// Decode one text frame from the control plane.
pub fn decode(text: &str) -> Decoded {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Decoded::Ignored("a control plane message that is not JSON");
    };
    let Some(obj) = value.as_object() else {
        return Decoded::Ignored("a control plane message that is not an object");
    };
    let kind = match obj.get("type").and_then(Value::as_str) {
        Some("snapshot") => "snapshot",
        Some("identity") => "identity",
        Some("hold") => "hold",
        Some("release") => "release",
        _ => return Decoded::Ignored("a control plane message of a type it does not know"),
    };
    if kind == "identity" {
        // As the Python's identity store words it: the first field it cannot use.
        for field in ["cert", "key", "ca", "spiffe_id", "fingerprint", "not_after"] {
            if !obj.contains_key(field) {
                return Decoded::Malformed {
                    kind,
                    error: Invalid(format!("an identity message without '{field}'")),
                };
            }
        }
    }
    match serde_json::from_value::<FromControl>(value) {
        Ok(message) => Decoded::Message(message),
        Err(err) => {
            let article = if kind == "identity" { "an" } else { "a" };
            Decoded::Malformed {
                kind,
                error: Invalid(format!("{article} {kind} message with {err}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Each message as `proxy/control.py` sends it (`json.dumps(separators=(",", ":"))`);
    /// inside records and breakers (free-form JSON here) keys are in serde_json's order.
    const FROM_PYTHON: &[&str] = &[
        r#"{"type":"hello","node":{"service":"catalog","version":"v1","instance":"catalog-v1-1","role":"sidecar","inbound":"127.0.0.1:41001","health_check":"TCP connect to 127.0.0.1:8000"},"snapshot_version":6,"health":{"state":"ready","detail":"TCP connect to 127.0.0.1:8000 succeeded"}}"#,
        r#"{"type":"hello","node":{"service":"frontend","version":"default","instance":"frontend-1","role":"sidecar","inbound":null,"health_check":"none"},"snapshot_version":0,"health":{"state":"starting","detail":"not probed yet"}}"#,
        r#"{"type":"health","state":"unhealthy","detail":"TCP connect to 127.0.0.1:8000 failed: Connection refused"}"#,
        r#"{"type":"telemetry","records":[{"destination":"catalog","source":"frontend","status":200}],"dropped":3}"#,
        r#"{"type":"ack","version":7}"#,
        r#"{"type":"nack","version":7,"error":"snapshot.routes.catalog.split weights must sum to 100"}"#,
        r#"{"type":"nack","version":null,"error":"snapshot must be an object"}"#,
        r#"{"type":"breakers","breakers":{"catalog":{"reason":"5 consecutive 5xx","state":"open"}}}"#,
        r#"{"type":"identity-ack","fingerprint":"ab12cd"}"#,
        r#"{"type":"leaving"}"#,
        r#"{"type":"held","in_flight":0}"#,
        r#"{"type":"released"}"#,
    ];

    #[test]
    fn every_sidecar_message_round_trips_byte_for_byte() {
        for text in FROM_PYTHON {
            let message: ToControl = serde_json::from_str(text).unwrap();
            assert_eq!(&message.to_text(), text);
        }
    }

    #[test]
    fn messages_built_here_serialise_as_the_python_ones() {
        let health = ToControl::Health(Health {
            state: HealthState::Ready,
            detail: "no port to probe".into(),
        });
        assert_eq!(
            health.to_text(),
            r#"{"type":"health","state":"ready","detail":"no port to probe"}"#
        );
        let nack = ToControl::Nack {
            version: Value::Null,
            error: "bad".into(),
        };
        assert_eq!(
            nack.to_text(),
            r#"{"type":"nack","version":null,"error":"bad"}"#
        );
        assert_eq!(ToControl::Held { in_flight: 0 }.to_text(), FROM_PYTHON[10]);
    }

    /// Each message as `devmesh/controlplane/sidecars.py` sends it (aiohttp's `send_json`).
    #[test]
    fn every_control_plane_message_round_trips() {
        let texts = [
            r#"{"type": "snapshot", "snapshot": {"version": 7, "routes": {"catalog": {"endpoints": []}}}}"#,
            r#"{"type": "identity", "spiffe_id": "spiffe://devmesh.local/demo/catalog", "cert": "-----BEGIN CERTIFICATE-----\n", "key": "-----BEGIN PRIVATE KEY-----\n", "ca": "-----BEGIN CERTIFICATE-----\n", "not_before": 1700000000.5, "not_after": 1700086400.5, "fingerprint": "ab12"}"#,
            r#"{"type": "hold"}"#,
            r#"{"type": "release"}"#,
        ];
        for text in texts {
            let Decoded::Message(message) = decode(text) else {
                panic!("not decoded: {text}");
            };
            let back = serde_json::to_value(&message).unwrap();
            assert_eq!(back, serde_json::from_str::<Value>(text).unwrap(), "{text}");
        }
    }

    #[test]
    fn a_snapshot_message_without_a_snapshot_carries_null() {
        assert_eq!(
            decode(r#"{"type":"snapshot"}"#),
            Decoded::Message(FromControl::Snapshot {
                snapshot: Value::Null
            })
        );
    }

    #[test]
    fn extra_fields_are_ignored() {
        assert_eq!(
            decode(r#"{"type":"hold","why":"restart"}"#),
            Decoded::Message(FromControl::Hold)
        );
    }

    #[test]
    fn what_is_not_a_known_message_is_ignored() {
        for text in [
            "not json",
            "[1]",
            r#"{"type":"status"}"#,
            r#"{"kind":"hold"}"#,
        ] {
            assert!(matches!(decode(text), Decoded::Ignored(_)), "{text}");
        }
    }

    #[test]
    fn an_identity_without_a_part_is_named_as_the_python_names_it() {
        let mut identity = json!({"type": "identity", "spiffe_id": "s", "cert": "c",
            "key": "k", "ca": "a", "not_after": 1.0, "fingerprint": "f"});
        identity.as_object_mut().unwrap().remove("key");
        assert_eq!(
            decode(&identity.to_string()),
            Decoded::Malformed {
                kind: "identity",
                error: Invalid::new("an identity message without 'key'")
            }
        );
        identity["key"] = json!("k");
        identity["not_after"] = json!("soon");
        let Decoded::Malformed {
            error: Invalid(text),
            ..
        } = decode(&identity.to_string())
        else {
            panic!("a bad not_after was taken");
        };
        assert!(
            text.starts_with("an identity message with invalid type"),
            "{text}"
        );
    }
}

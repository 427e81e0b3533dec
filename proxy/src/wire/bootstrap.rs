//! The bootstrap file: who this sidecar is, where it listens, where its control plane is.
//!
//! The runtime writes one bootstrap JSON file per sidecar (`proxy/bootstrap.py`'s
//! `Bootstrap.to_dict`) and starts `devmesh-proxy --bootstrap FILE`. Everything that can
//! change while the mesh runs comes later, in snapshots. The fields, their defaults and
//! the error texts are those of `proxy/bootstrap.py`, except that a field of the wrong
//! type is named (the Python says only what Python's conversion said).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::invalid::Invalid;

/// Where a sidecar without a `token_file` (one in a container) finds the project token.
pub const TOKEN_ENV: &str = "DEVMESH_TOKEN";
/// The bootstrap JSON itself, for a sidecar started without `--bootstrap`.
pub const BOOTSTRAP_ENV: &str = "DEVMESH_BOOTSTRAP";
/// `advertise_host: auto`: the address this sidecar reaches its control plane from.
pub const AUTO: &str = "auto";

/// What the proxy is: the sidecar of an instance, or the mesh's gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Sidecar,
    Gateway,
}

impl Role {
    /// The name on the wire (`sidecar`, `gateway`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sidecar => "sidecar",
            Role::Gateway => "gateway",
        }
    }
}

/// A host port where traffic from outside the mesh enters, bound for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayListener {
    pub port: u16,
    pub service: String,
}

/// A bootstrap file that passed its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// The identity this proxy speaks for (`ingress` for the gateway).
    pub service: String,
    pub version: String,
    pub instance: String,
    /// Base URL of the control plane, e.g. `http://127.0.0.1:41000` (no trailing `/`).
    pub control_plane: String,
    /// The project token's file; `None`: the token is in `$DEVMESH_TOKEN`.
    pub token_file: Option<PathBuf>,
    /// Where the last good snapshot (and the identity) is kept.
    pub state_dir: PathBuf,
    pub role: Role,
    /// Where the inbound and gateway listeners bind.
    pub listen_host: String,
    /// Where the outbound listener binds: only the instance itself may use it.
    pub outbound_host: String,
    /// The host other sidecars use to reach this one's inbound listener; `auto`: the
    /// address this sidecar reaches its control plane from.
    pub advertise_host: String,
    pub inbound_port: u16,
    pub outbound_port: u16,
    /// The port of the instance this sidecar fronts (`None`: it receives no traffic).
    pub app_port: Option<u16>,
    pub health_path: Option<String>,
    pub gateway: Vec<GatewayListener>,
    /// Written (atomically) with the bound ports once every listener is up.
    pub ready_file: Option<PathBuf>,
}

/// Why the project token cannot be had (read before each dial).
#[derive(Debug)]
pub enum TokenError {
    /// `$DEVMESH_TOKEN` is not set (and there is no `token_file`).
    NotSet,
    /// The `token_file` cannot be read.
    Unreadable(PathBuf, std::io::Error),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::NotSet => write!(f, "no project token: ${TOKEN_ENV} is not set"),
            TokenError::Unreadable(path, err) => write!(
                f,
                "no project token: cannot read {} ({})",
                path.display(),
                strerror(err)
            ),
        }
    }
}

/// An OS error's text without Rust's ` (os error N)` suffix, as Python's `strerror`.
pub fn strerror(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(at) if err.raw_os_error().is_some() => text[..at].to_string(),
        _ => text,
    }
}

impl Bootstrap {
    /// Where the last good snapshot is kept, to start from when the control plane is away.
    pub fn snapshot_file(&self) -> PathBuf {
        self.state_dir.join("snapshot.json")
    }

    /// Where the identity the control plane issued is kept.
    pub fn identity_dir(&self) -> PathBuf {
        self.state_dir.join("identity")
    }

    /// The project token, from `token_file` or `$DEVMESH_TOKEN`, stripped.
    pub fn token(&self) -> Result<String, TokenError> {
        match &self.token_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|text| text.trim().to_string())
                .map_err(|err| TokenError::Unreadable(path.clone(), err)),
            None => std::env::var(TOKEN_ENV)
                .map(|text| text.trim().to_string())
                .map_err(|_| TokenError::NotSet),
        }
    }

    /// Read and check the bootstrap file at `path`.
    pub fn load(path: &Path) -> Result<Bootstrap, Invalid> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            Invalid(format!(
                "cannot read bootstrap file {}: {}",
                path.display(),
                strerror(&err)
            ))
        })?;
        let data: Value = serde_json::from_str(&text).map_err(|err| {
            Invalid(format!(
                "cannot read bootstrap file {}: {err}",
                path.display()
            ))
        })?;
        Bootstrap::from_value(&data)
    }

    /// The bootstrap given in `$DEVMESH_BOOTSTRAP` (`text`: its value, if set).
    pub fn from_env_text(text: Option<&str>) -> Result<Bootstrap, Invalid> {
        let text = match text {
            Some(text) if !text.is_empty() => text,
            _ => {
                return Err(Invalid(format!(
                    "give --bootstrap FILE or set ${BOOTSTRAP_ENV}"
                )))
            }
        };
        let data: Value = serde_json::from_str(text)
            .map_err(|err| Invalid(format!("${BOOTSTRAP_ENV} is not JSON: {err}")))?;
        Bootstrap::from_value(&data)
    }

    /// Check a bootstrap as JSON.
    pub fn from_value(data: &Value) -> Result<Bootstrap, Invalid> {
        let obj = data
            .as_object()
            .ok_or_else(|| Invalid::new("bootstrap must be a JSON object"))?;
        let role = match obj.get("role") {
            None => Role::Sidecar,
            Some(Value::String(s)) if s == "sidecar" => Role::Sidecar,
            Some(Value::String(s)) if s == "gateway" => Role::Gateway,
            Some(other) => {
                return Err(Invalid(format!(
                    "bootstrap.role must be sidecar or gateway, got {}",
                    py_repr(other)
                )))
            }
        };
        let gateway = match obj.get("gateway") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| gateway_listener(item, i))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(wrong_type("bootstrap.gateway must be a list")),
        };
        Ok(Bootstrap {
            service: text(required(obj, "service")?, "service")?,
            version: text(required(obj, "version")?, "version")?,
            instance: text(required(obj, "instance")?, "instance")?,
            control_plane: text(required(obj, "control_plane")?, "control_plane")?
                .trim_end_matches('/')
                .to_string(),
            token_file: optional_path(obj, "token_file")?,
            state_dir: path(required(obj, "state_dir")?, "state_dir")?,
            role,
            listen_host: text_or(obj, "listen_host", "127.0.0.1")?,
            outbound_host: text_or(obj, "outbound_host", "127.0.0.1")?,
            advertise_host: text_or(obj, "advertise_host", "127.0.0.1")?,
            inbound_port: match obj.get("inbound_port") {
                None => 0,
                Some(v) => port(v, "bootstrap.inbound_port")?,
            },
            outbound_port: match obj.get("outbound_port") {
                None => 0,
                Some(v) => port(v, "bootstrap.outbound_port")?,
            },
            app_port: match obj.get("app_port") {
                None | Some(Value::Null) => None,
                Some(v) => Some(port(v, "bootstrap.app_port")?),
            },
            health_path: match obj.get("health_path") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(wrong_type("bootstrap.health_path must be a string")),
            },
            gateway,
            ready_file: optional_path(obj, "ready_file")?,
        })
    }
}

fn gateway_listener(item: &Value, index: usize) -> Result<GatewayListener, Invalid> {
    let where_ = format!("bootstrap.gateway[{index}]");
    let obj = item
        .as_object()
        .ok_or_else(|| wrong_type(&format!("{where_} must be an object")))?;
    Ok(GatewayListener {
        port: port(required(obj, "port")?, &format!("{where_}.port"))?,
        service: text(
            required(obj, "service")?,
            &format!("gateway[{index}].service"),
        )?,
    })
}

fn required<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a Value, Invalid> {
    obj.get(name)
        .ok_or_else(|| Invalid(format!("bootstrap is missing the field '{name}'")))
}

fn wrong_type(what: &str) -> Invalid {
    Invalid(format!("bootstrap has a field of the wrong type: {what}"))
}

/// A text field: a string, or a number or boolean taken as its text (Python's `str()`).
fn text(value: &Value, name: &str) -> Result<String, Invalid> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(if *b { "True" } else { "False" }.to_string()),
        _ => Err(wrong_type(&format!("bootstrap.{name} must be a string"))),
    }
}

fn text_or(obj: &Map<String, Value>, name: &str, default: &str) -> Result<String, Invalid> {
    match obj.get(name) {
        None => Ok(default.to_string()),
        Some(v) => text(v, name),
    }
}

fn path(value: &Value, name: &str) -> Result<PathBuf, Invalid> {
    match value {
        Value::String(s) => Ok(PathBuf::from(s)),
        _ => Err(wrong_type(&format!("bootstrap.{name} must be a path"))),
    }
}

/// A path that may be left out: absent, `null`, `""` (anything falsy, as the Python).
fn optional_path(obj: &Map<String, Value>, name: &str) -> Result<Option<PathBuf>, Invalid> {
    match obj.get(name) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(v) => path(v, name).map(Some),
    }
}

/// A port: an integer (or its text, as Python's `int()` takes it) in 0..=65535.
fn port(value: &Value, where_: &str) -> Result<u16, Invalid> {
    let number = match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.trunc() as i64)
        }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    };
    match number {
        Some(n) => u16::try_from(n).map_err(|_| {
            wrong_type(&format!(
                "{where_} must be a port number (0-65535), got {n}"
            ))
        }),
        None => Err(wrong_type(&format!(
            "{where_} must be an integer, got {}",
            py_repr(value)
        ))),
    }
}

/// A JSON value as Python's `repr` shows it in the Python sidecar's texts.
fn py_repr(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'{s}'"),
        Value::Null => "None".to_string(),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "service": "catalog",
            "version": "v1",
            "instance": "catalog-v1-1",
            "control_plane": "http://127.0.0.1:41000/",
            "state_dir": "/tmp/state",
        })
    }

    fn error(data: Value) -> String {
        Bootstrap::from_value(&data).unwrap_err().0
    }

    #[test]
    fn defaults_are_those_of_the_python() {
        let boot = Bootstrap::from_value(&minimal()).unwrap();
        assert_eq!(boot.control_plane, "http://127.0.0.1:41000");
        assert_eq!(boot.role, Role::Sidecar);
        assert_eq!(boot.listen_host, "127.0.0.1");
        assert_eq!(boot.outbound_host, "127.0.0.1");
        assert_eq!(boot.advertise_host, "127.0.0.1");
        assert_eq!((boot.inbound_port, boot.outbound_port), (0, 0));
        assert_eq!(boot.app_port, None);
        assert_eq!(boot.health_path, None);
        assert_eq!(boot.token_file, None);
        assert_eq!(boot.ready_file, None);
        assert!(boot.gateway.is_empty());
        assert_eq!(
            boot.snapshot_file(),
            PathBuf::from("/tmp/state/snapshot.json")
        );
    }

    #[test]
    fn a_bootstrap_as_the_runtime_writes_it_is_read_whole() {
        // Bootstrap.to_dict() of the local runtime, token and ready file included.
        let data = json!({
            "service": "ingress", "version": "default", "instance": "ingress",
            "control_plane": "http://127.0.0.1:41000", "token_file": "/p/.devmesh/token",
            "state_dir": "/p/.devmesh/sidecars/ingress", "role": "gateway",
            "listen_host": "0.0.0.0", "outbound_host": "127.0.0.1", "advertise_host": "auto",
            "inbound_port": 0, "outbound_port": 41002, "app_port": 8000,
            "health_path": "/healthz", "gateway": [{"port": 8080, "service": "frontend"}],
            "ready_file": "/p/.devmesh/sidecars/ingress/ready.json",
        });
        let boot = Bootstrap::from_value(&data).unwrap();
        assert_eq!(boot.role, Role::Gateway);
        assert_eq!(boot.token_file, Some(PathBuf::from("/p/.devmesh/token")));
        assert_eq!(boot.advertise_host, AUTO);
        assert_eq!(boot.outbound_port, 41002);
        assert_eq!(boot.app_port, Some(8000));
        assert_eq!(boot.health_path.as_deref(), Some("/healthz"));
        assert_eq!(
            boot.gateway,
            vec![GatewayListener {
                port: 8080,
                service: "frontend".into()
            }]
        );
        assert!(boot.ready_file.is_some());
    }

    #[test]
    fn null_and_empty_optional_fields_are_left_out() {
        let mut data = minimal();
        for (k, v) in [
            ("token_file", json!(null)),
            ("ready_file", json!("")),
            ("app_port", json!(null)),
            ("health_path", json!(null)),
        ] {
            data[k] = v;
        }
        let boot = Bootstrap::from_value(&data).unwrap();
        assert_eq!(
            (boot.token_file, boot.ready_file, boot.app_port),
            (None, None, None)
        );
    }

    #[test]
    fn ports_are_taken_as_python_int_takes_them() {
        let mut data = minimal();
        data["app_port"] = json!(" 8000 ");
        data["inbound_port"] = json!(41001.0);
        let boot = Bootstrap::from_value(&data).unwrap();
        assert_eq!((boot.app_port, boot.inbound_port), (Some(8000), 41001));
    }

    #[test]
    fn not_an_object() {
        assert_eq!(error(json!([1])), "bootstrap must be a JSON object");
    }

    #[test]
    fn a_missing_field_is_named() {
        for field in [
            "service",
            "version",
            "instance",
            "control_plane",
            "state_dir",
        ] {
            let mut data = minimal();
            data.as_object_mut().unwrap().remove(field);
            assert_eq!(
                error(data),
                format!("bootstrap is missing the field '{field}'")
            );
        }
        let mut data = minimal();
        data["gateway"] = json!([{"service": "frontend"}]);
        assert_eq!(error(data), "bootstrap is missing the field 'port'");
    }

    #[test]
    fn a_bad_role_is_named_with_its_value() {
        let mut data = minimal();
        data["role"] = json!("mesh");
        assert_eq!(
            error(data),
            "bootstrap.role must be sidecar or gateway, got 'mesh'"
        );
        let mut data = minimal();
        data["role"] = json!(null);
        assert_eq!(
            error(data),
            "bootstrap.role must be sidecar or gateway, got None"
        );
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named() {
        let cases = [
            (
                "inbound_port",
                json!("x"),
                "bootstrap.inbound_port must be an integer, got 'x'",
            ),
            (
                "app_port",
                json!(70000),
                "bootstrap.app_port must be a port number (0-65535), got 70000",
            ),
            (
                "outbound_port",
                json!([]),
                "bootstrap.outbound_port must be an integer, got []",
            ),
            ("state_dir", json!(5), "bootstrap.state_dir must be a path"),
            ("service", json!({}), "bootstrap.service must be a string"),
            ("gateway", json!({}), "bootstrap.gateway must be a list"),
            (
                "gateway",
                json!([5]),
                "bootstrap.gateway[0] must be an object",
            ),
            (
                "health_path",
                json!(3),
                "bootstrap.health_path must be a string",
            ),
        ];
        for (field, value, text) in cases {
            let mut data = minimal();
            data[field] = value;
            assert_eq!(
                error(data),
                format!("bootstrap has a field of the wrong type: {text}")
            );
        }
    }

    #[test]
    fn numbers_in_text_fields_are_taken_as_text() {
        let mut data = minimal();
        data["version"] = json!(2);
        assert_eq!(Bootstrap::from_value(&data).unwrap().version, "2");
    }

    #[test]
    fn from_env_needs_the_variable_and_json() {
        assert_eq!(
            Bootstrap::from_env_text(None).unwrap_err().0,
            "give --bootstrap FILE or set $DEVMESH_BOOTSTRAP"
        );
        let err = Bootstrap::from_env_text(Some("{")).unwrap_err().0;
        assert!(err.starts_with("$DEVMESH_BOOTSTRAP is not JSON: "), "{err}");
        let text = minimal().to_string();
        assert!(Bootstrap::from_env_text(Some(&text)).is_ok());
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let err = Bootstrap::load(Path::new("/no/such/bootstrap.json"))
            .unwrap_err()
            .0;
        assert_eq!(
            err,
            "cannot read bootstrap file /no/such/bootstrap.json: No such file or directory"
        );
    }

    #[test]
    fn the_token_comes_stripped_from_its_file_or_says_why_not() {
        let dir = std::env::temp_dir().join(format!("rlink-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "the-token\n").unwrap();
        let mut boot = Bootstrap::from_value(&minimal()).unwrap();
        boot.token_file = Some(file.clone());
        assert_eq!(boot.token().unwrap(), "the-token");
        std::fs::remove_file(&file).unwrap();
        assert_eq!(
            boot.token().unwrap_err().to_string(),
            format!(
                "no project token: cannot read {} (No such file or directory)",
                file.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

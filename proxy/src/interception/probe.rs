//! `devmesh-proxy probe --port PORT [--path PATH]`: one health probe of the app, run
//! in the sidecar's network namespace by the docker runtime after it restarts a
//! service (the Rust sidecar image has no Python for `readiness.probe_script`).
//!
//! The probe is the sidecar's own ([`crate::control::health`]): a TCP connect to
//! 127.0.0.1:PORT, or `GET PATH` where one is given (any answer below 500 passes).
//! Exit status 0 when it passes, 1 when it does not (what was seen on stderr), 2
//! for bad arguments.

use crate::control::health::{HealthProbe, Target};

/// The usage line of `devmesh-proxy probe`.
pub const USAGE: &str = "usage: devmesh-proxy probe --port PORT [--path PATH]";

/// Parse `probe`'s arguments; the error is one sentence.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Target, String> {
    let mut target = Target {
        app_port: None,
        path: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "--port" | "--path" => {
                let value = inline
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs a value"))?;
                if name == "--port" {
                    let port = value
                        .trim()
                        .parse::<u16>()
                        .map_err(|_| format!("--port must be a port number, not {value:?}"))?;
                    target.app_port = Some(port);
                } else {
                    target.path = Some(value).filter(|p| !p.is_empty());
                }
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    if target.app_port.is_none() {
        return Err(format!("--port is required; {USAGE}"));
    }
    Ok(target)
}

/// `devmesh-proxy probe ARGS`: the exit status (see the module's doc).
pub fn main(args: impl IntoIterator<Item = String>) -> u8 {
    let target = match parse_args(args) {
        Ok(target) => target,
        Err(text) => {
            eprintln!("devmesh-proxy probe: {text}");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("devmesh-proxy probe: cannot start the runtime: {err}");
            return 1;
        }
    };
    let (passed, detail) = runtime.block_on(HealthProbe::new(target).check());
    if passed {
        0
    } else {
        eprintln!("devmesh-proxy probe: {detail}");
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Target, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn the_command_line() {
        assert_eq!(
            args(&["--port", "8000", "--path=/healthz"]).unwrap(),
            Target {
                app_port: Some(8000),
                path: Some("/healthz".into())
            }
        );
        assert_eq!(args(&["--port=80"]).unwrap().path, None);
        assert!(args(&[]).unwrap_err().starts_with("--port is required"));
        assert_eq!(args(&["--port"]).unwrap_err(), "--port needs a value");
        assert_eq!(
            args(&["--port", "x"]).unwrap_err(),
            "--port must be a port number, not \"x\""
        );
    }

    #[test]
    fn a_port_nothing_listens_on_fails_and_one_that_listens_passes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(main(["--port".to_string(), port.to_string()]), 0);
        drop(listener);
        assert_eq!(main(["--port".to_string(), port.to_string()]), 1);
    }
}

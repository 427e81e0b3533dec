//! `devmesh-proxy --bootstrap PATH`: one sidecar (or gateway) process, run until SIGTERM
//! or SIGINT (then it tells the control plane it is leaving, closes its link, exits 0).
//!
//! Without `--bootstrap`, the bootstrap JSON is taken from `$DEVMESH_BOOTSTRAP`. A bad
//! bootstrap is one sentence on stderr and exit status 2. Logs go to stderr
//! (`--log-level`, default `$DEVMESH_PROXY_LOG` or `info`).
//!
//! Not yet a proxy: it links to the control plane and probes its app's health, and
//! binds no listener (the hello reports the inbound port the bootstrap names).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use devmesh_proxy::control::health::{HealthProbe, Target};
use devmesh_proxy::control::link::ControlLink;
use devmesh_proxy::wire::bootstrap::{Bootstrap, BOOTSTRAP_ENV};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info};

const USAGE: &str = "usage: devmesh-proxy [--bootstrap FILE] [--log-level LEVEL]";

/// The command line.
#[derive(Debug, PartialEq)]
struct Args {
    bootstrap: Option<PathBuf>,
    log_level: Option<String>,
}

/// Parse the arguments after the program's name; the error is one sentence.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        bootstrap: None,
        log_level: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--bootstrap" => parsed.bootstrap = Some(PathBuf::from(value("--bootstrap")?)),
            "--log-level" => parsed.log_level = Some(value("--log-level")?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(parsed)
}

/// Python's level names (`INFO`, `WARNING`) as tracing's.
fn filter(level: &str) -> String {
    match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_string(),
        "critical" | "fatal" => "error".to_string(),
        other => other.to_string(),
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(text) => {
            eprintln!("devmesh-proxy: {text}");
            return ExitCode::from(2);
        }
    };
    let level = args
        .log_level
        .or_else(|| std::env::var("DEVMESH_PROXY_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    let env_filter = tracing_subscriber::EnvFilter::try_new(filter(&level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(env_filter)
        .init();
    let boot = match &args.bootstrap {
        Some(path) => Bootstrap::load(path),
        None => Bootstrap::from_env_text(std::env::var(BOOTSTRAP_ENV).ok().as_deref()),
    };
    let boot = match boot {
        Ok(boot) => boot,
        Err(err) => {
            eprintln!("devmesh-proxy: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("devmesh-proxy: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(serve(boot))
}

async fn serve(boot: Bootstrap) -> ExitCode {
    let (mut terminate, mut interrupt) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(err), _) | (_, Err(err)) => {
            error!("cannot handle SIGTERM/SIGINT: {err}");
            return ExitCode::from(1);
        }
    };
    let health = Arc::new(HealthProbe::new(Target {
        app_port: boot.app_port,
        path: boot.health_path.clone(),
    }));
    info!(
        "{} {} started (not proxying yet: no listener is bound)",
        boot.role.as_str(),
        boot.instance
    );
    let mut link = ControlLink::new(boot, health.clone());
    let (stop, stopped) = watch::channel(false);
    let probe = tokio::spawn(async move { health.run().await });
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        info!("stopping");
        let _ = stop.send(true);
    });
    link.run(stopped).await;
    probe.abort();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn the_command_line() {
        assert_eq!(
            args(&["--bootstrap", "/b.json"]).unwrap().bootstrap,
            Some(PathBuf::from("/b.json"))
        );
        assert_eq!(
            args(&["--bootstrap=/b.json", "--log-level", "DEBUG"]).unwrap(),
            Args {
                bootstrap: Some(PathBuf::from("/b.json")),
                log_level: Some("DEBUG".into()),
            }
        );
        assert_eq!(args(&[]).unwrap().bootstrap, None);
        assert_eq!(
            args(&["--bootstrap"]).unwrap_err(),
            "--bootstrap needs a value"
        );
        assert!(args(&["--frob"])
            .unwrap_err()
            .starts_with("unknown argument \"--frob\""));
        assert_eq!(filter("WARNING"), "warn");
        assert_eq!(filter("INFO"), "info");
    }
}

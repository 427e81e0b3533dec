//! `devmesh-proxy --bootstrap PATH`: one sidecar (or gateway) process, run until SIGTERM
//! or SIGINT (then it tells the control plane it is leaving, closes its link, exits 0).
//!
//! Without `--bootstrap`, the bootstrap JSON is taken from `$DEVMESH_BOOTSTRAP`. A bad
//! bootstrap is one sentence on stderr and exit status 2. Logs go to stderr
//! (`--log-level`, default `$DEVMESH_PROXY_LOG` or `info`).
//!
//! It binds its listeners first (a sidecar's outbound and inbound, the gateway's
//! listeners; port 0 takes any free port, and the hello and the bootstrap's
//! `ready_file` report the ports bound; a port it cannot bind is exit status 3), then
//! links to the control plane and probes its app. On SIGTERM it says `leaving` first,
//! hands over what telemetry it has, then stops listening.
//!
//! `devmesh-proxy intercept ARGS` is instead the init step that installs the redirects
//! of transparent interception (`devmesh_proxy::interception`), and exits;
//! `devmesh-proxy probe ARGS` probes the app once (`interception::probe`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use devmesh_proxy::cli::{log_filter, Cli, Command};
use devmesh_proxy::control::health::{HealthProbe, Target};
use devmesh_proxy::control::link::ControlLink;
use devmesh_proxy::engine::listener;
use devmesh_proxy::engine::sidecar::{BoundPorts, Engine, Kind};
use devmesh_proxy::wire::bootstrap::{strerror, Bootstrap, Role, BOOTSTRAP_ENV};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info};

/// The exit status when a listener cannot bind (`python -m proxy`'s).
const EXIT_BIND_FAILED: u8 = 3;

fn main() -> ExitCode {
    let args = match Cli::try_parse() {
        Ok(args) => args,
        Err(err) => {
            // --help and --version print and exit 0; a usage error is clap's, exit 2.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    match &args.command {
        Some(Command::Intercept(intercept)) => {
            return ExitCode::from(devmesh_proxy::interception::main(&intercept.plan()))
        }
        Some(Command::Probe(probe)) => {
            return ExitCode::from(devmesh_proxy::interception::probe::main(probe.target()))
        }
        None => {}
    }
    let level = args
        .log_level
        .or_else(|| std::env::var("DEVMESH_PROXY_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    let env_filter = tracing_subscriber::EnvFilter::try_new(log_filter(&level))
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

/// Bind every listener the bootstrap names; the error is the log line.
async fn bind_all(
    boot: &Bootstrap,
) -> Result<(BoundPorts, Vec<(tokio::net::TcpListener, Kind)>), String> {
    let fail = |host: &str, err: std::io::Error| {
        let reason = if err.kind() == std::io::ErrorKind::AddrInUse {
            "address already in use".to_string()
        } else {
            strerror(&err)
        };
        format!("cannot listen on {host}: {reason}")
    };
    let mut ports = BoundPorts::default();
    let mut bound = Vec::new();
    let port_of = |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.port()).unwrap_or(0);
    if boot.role == Role::Sidecar {
        let out = listener::bind(&boot.outbound_host, boot.outbound_port)
            .await
            .map_err(|e| fail(&boot.outbound_host, e))?;
        ports.outbound = Some(port_of(&out));
        bound.push((out, Kind::Outbound));
        let inb = listener::bind(&boot.listen_host, boot.inbound_port)
            .await
            .map_err(|e| fail(&boot.listen_host, e))?;
        ports.inbound = Some(port_of(&inb));
        bound.push((inb, Kind::Inbound));
    }
    for gateway in &boot.gateway {
        let l = listener::bind(&boot.listen_host, gateway.port)
            .await
            .map_err(|e| fail(&boot.listen_host, e))?;
        ports.gateway.insert(gateway.service.clone(), port_of(&l));
        bound.push((l, Kind::Gateway(gateway.service.clone())));
    }
    Ok((ports, bound))
}

/// The ready file: the pid and the ports bound, written whole (a rename).
fn write_ready_file(path: &std::path::Path, ports: &BoundPorts) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let text = serde_json::json!({
        "pid": std::process::id(),
        "inbound": ports.inbound,
        "outbound": ports.outbound,
        "gateway": ports.gateway,
    });
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, text.to_string())?;
    std::fs::rename(&tmp, path)
}

async fn serve(mut boot: Bootstrap) -> ExitCode {
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
    let (ports, bound) = match bind_all(&boot).await {
        Ok(bound) => bound,
        Err(line) => {
            error!("{line}");
            return ExitCode::from(EXIT_BIND_FAILED);
        }
    };
    // The hello names the inbound port bound (a gateway has none).
    boot.inbound_port = ports.inbound.unwrap_or(0);
    if let Some(outbound) = ports.outbound {
        boot.outbound_port = outbound;
    }
    let health = Arc::new(HealthProbe::new(Target {
        app_port: boot.app_port,
        path: boot.health_path.clone(),
    }));
    let link = ControlLink::new(boot.clone(), health.clone());
    let engine = Engine::new(boot.clone(), link.snapshots())
        .with_credentials(link.credentials())
        .with_health(health.clone());
    let engine = Arc::new(engine);
    engine.set_ports(ports.clone());
    let mut link = link.with_data_plane(engine.data_plane());
    let (stop_listening, listening) = watch::channel(false);
    for (l, kind) in bound {
        tokio::spawn(listener::serve(engine.clone(), l, kind, listening.clone()));
    }
    if let Some(path) = &boot.ready_file {
        if let Err(err) = write_ready_file(path, &ports) {
            error!(
                "cannot write the ready file {}: {}",
                path.display(),
                strerror(&err)
            );
        }
    }
    info!(
        "{} {} listening: {ports:?}",
        boot.role.as_str(),
        boot.instance
    );
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
    // On stop the link says `leaving` first, sends what is pending, and closes.
    link.run(stopped).await;
    let _ = stop_listening.send(true);
    probe.abort();
    ExitCode::SUCCESS
}

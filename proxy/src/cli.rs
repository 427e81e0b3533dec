//! The command line of `devmesh-proxy`, parsed with clap.
//!
//! Without a subcommand it runs one sidecar (or gateway) from its bootstrap file. The
//! two subcommands are the steps the Docker runtime runs with the sidecar's own image:
//! `intercept` installs the iptables redirects of transparent interception (the init
//! step), and `probe` probes the app once (a readiness check after a restart). Usage
//! errors are clap's, with exit status 2.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::control::health::Target;
use crate::interception::{Plan, PROXY_UID};

/// `devmesh-proxy [--bootstrap FILE] [--log-level LEVEL] [COMMAND]`.
#[derive(Debug, PartialEq, Parser)]
#[command(
    name = "devmesh-proxy",
    version,
    about = "devmesh's sidecar: one sidecar or gateway of a local service mesh, run from its \
             bootstrap file until SIGTERM",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The bootstrap file [default: the JSON in $DEVMESH_BOOTSTRAP]
    #[arg(long, value_name = "FILE")]
    pub bootstrap: Option<PathBuf>,
    /// error, warn (warning), info, debug or trace [default: $DEVMESH_PROXY_LOG, else info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// The one-off steps.
#[derive(Debug, PartialEq, Subcommand)]
pub enum Command {
    /// Install the iptables redirects of transparent interception, print them, and exit
    Intercept(InterceptArgs),
    /// Probe the app once as the sidecar's health probe does; exit 0 if it passes
    Probe(ProbeArgs),
}

/// `intercept`: the arguments of `python -m proxy.interception`.
#[derive(Debug, PartialEq, Args)]
pub struct InterceptArgs {
    /// The sidecar's outbound listener
    #[arg(long, value_name = "PORT")]
    pub outbound_port: u16,
    /// The sidecar's inbound listener
    #[arg(long, value_name = "PORT")]
    pub inbound_port: u16,
    /// The service's own port: inbound TCP to it goes through the sidecar
    #[arg(long, value_name = "PORT")]
    pub app_port: Option<u16>,
    /// Destination ports whose outbound TCP goes through the sidecar, comma-separated
    #[arg(long, value_name = "P,P...", default_value = "", value_parser = port_list)]
    pub redirect_ports: Ports,
    /// The sidecar's uid, whose own connections are never redirected
    #[arg(long, value_name = "UID", default_value_t = PROXY_UID)]
    pub proxy_uid: u32,
}

/// A comma-separated list of ports (empty items are passed over, as the Python does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports(pub Vec<u16>);

fn port_list(text: &str) -> Result<Ports, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| format!("{p:?} is not a port number"))
        })
        .collect::<Result<_, _>>()
        .map(Ports)
}

impl InterceptArgs {
    /// What to redirect, and where to.
    pub fn plan(&self) -> Plan {
        Plan {
            outbound_port: self.outbound_port,
            inbound_port: self.inbound_port,
            redirect_ports: self.redirect_ports.0.clone(),
            app_port: self.app_port,
            proxy_uid: self.proxy_uid,
        }
    }
}

/// `probe`: the app's port, and the path of an HTTP probe.
#[derive(Debug, PartialEq, Args)]
pub struct ProbeArgs {
    /// The app's port on 127.0.0.1
    #[arg(long, value_name = "PORT")]
    pub port: u16,
    /// GET this path (any status below 500 passes) instead of a TCP connect
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
}

impl ProbeArgs {
    /// What to probe.
    pub fn target(&self) -> Target {
        Target {
            app_port: Some(self.port),
            path: self.path.clone().filter(|p| !p.is_empty()),
        }
    }
}

/// Python's level names (`INFO`, `WARNING`) as tracing's.
pub fn log_filter(level: &str) -> String {
    match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_string(),
        "critical" | "fatal" => "error".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("devmesh-proxy").chain(args.iter().copied()))
    }

    #[test]
    fn a_sidecar_runs_from_its_bootstrap() {
        let cli = parse(&["--bootstrap=/b.json", "--log-level", "DEBUG"]).unwrap();
        assert_eq!(
            cli,
            Cli {
                command: None,
                bootstrap: Some(PathBuf::from("/b.json")),
                log_level: Some("DEBUG".into()),
            }
        );
        assert_eq!(parse(&[]).unwrap().bootstrap, None);
        let missing = parse(&["--bootstrap"]).unwrap_err();
        assert_eq!(missing.kind(), clap::error::ErrorKind::InvalidValue);
        let unknown = parse(&["--frob"]).unwrap_err();
        assert_eq!(unknown.kind(), clap::error::ErrorKind::UnknownArgument);
        assert_eq!(unknown.exit_code(), 2);
        assert_eq!(log_filter("WARNING"), "warn");
        assert_eq!(log_filter("INFO"), "info");
    }

    #[test]
    fn intercept_takes_the_arguments_of_python_m_proxy_interception() {
        let cli = parse(&[
            "intercept",
            "--outbound-port",
            "15001",
            "--inbound-port=15006",
            "--redirect-ports",
            "80,8000,",
            "--proxy-uid",
            "1337",
            "--app-port",
            "8000",
        ])
        .unwrap();
        let Some(Command::Intercept(args)) = cli.command else {
            panic!("not intercept: {cli:?}");
        };
        assert_eq!(
            args.plan(),
            Plan {
                outbound_port: 15001,
                inbound_port: 15006,
                redirect_ports: vec![80, 8000],
                app_port: Some(8000),
                proxy_uid: 1337,
            }
        );
        let Some(Command::Intercept(args)) =
            parse(&["intercept", "--outbound-port", "1", "--inbound-port", "2"])
                .unwrap()
                .command
        else {
            panic!("not intercept");
        };
        assert_eq!(
            (args.plan().redirect_ports, args.proxy_uid),
            (vec![], PROXY_UID)
        );
        let none = [
            "intercept",
            "--outbound-port",
            "1",
            "--inbound-port",
            "2",
            "--redirect-ports",
            "",
        ];
        let Some(Command::Intercept(args)) = parse(&none).unwrap().command else {
            panic!("not intercept");
        };
        assert_eq!(
            args.plan().redirect_ports,
            Vec::<u16>::new(),
            "the runtime's empty list"
        );
        for bad in [
            &["intercept", "--inbound-port", "2"][..],
            &["intercept", "--outbound-port", "x", "--inbound-port", "2"],
            &[
                "intercept",
                "--outbound-port",
                "1",
                "--inbound-port",
                "2",
                "--redirect-ports",
                "80,http",
            ],
            &[
                "intercept",
                "--outbound-port",
                "1",
                "--inbound-port",
                "2",
                "--frob",
                "1",
            ],
            &[
                "--bootstrap",
                "/b.json",
                "intercept",
                "--outbound-port",
                "1",
                "--inbound-port",
                "2",
            ],
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}: {err}");
        }
    }

    #[test]
    fn probe_takes_a_port_and_maybe_a_path() {
        let target = |args: &[&str]| match parse(args).unwrap().command {
            Some(Command::Probe(args)) => args.target(),
            other => panic!("not probe: {other:?}"),
        };
        assert_eq!(
            target(&["probe", "--port", "8000", "--path=/healthz"]),
            Target {
                app_port: Some(8000),
                path: Some("/healthz".into())
            }
        );
        assert_eq!(target(&["probe", "--port=80"]).path, None);
        assert_eq!(target(&["probe", "--port=80", "--path="]).path, None);
        assert!(parse(&["probe"]).is_err());
    }
}

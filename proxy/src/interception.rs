//! Transparent interception: the iptables rules that send an instance's traffic
//! through its sidecar (a port of `proxy/interception.py`, with the same rules).
//!
//! As Istio's init container does, a short-lived step with NET_ADMIN installs NAT
//! rules in the network namespace the sidecar owns (and the service joins):
//!
//! - outbound: TCP that the service opens to a mesh port is redirected to the
//!   sidecar's outbound listener, which reads the original destination
//!   (`SO_ORIGINAL_DST`); the sidecar's own connections (its uid) and loopback are
//!   left alone;
//! - inbound: TCP arriving for the service's port is redirected to the sidecar's
//!   inbound listener, so nothing reaches the service around its sidecar.
//!
//! [`rules`] is pure (it builds the `iptables` argument lists) so it is tested
//! without privileges; [`apply`] runs them, and `devmesh-proxy intercept ...`
//! (the arguments of `python -m proxy.interception`) is the init step's command.
//! Applying is idempotent: devmesh's chains are flushed and filled again.
//!
//! [`probe`] is the other one-shot command the docker runtime runs in a sidecar's
//! namespace: a health probe of the app after a restart.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The chain the outbound redirects live in (hooked from `OUTPUT`).
pub const OUTBOUND_CHAIN: &str = "DEVMESH_OUTBOUND";
/// The chain the inbound redirect lives in (hooked from `PREROUTING`).
pub const INBOUND_CHAIN: &str = "DEVMESH_INBOUND";
/// The uid the sidecar runs as; its own connections are never redirected.
pub const PROXY_UID: u32 = 1337;
/// The most ports one `-m multiport` rule takes.
const MULTIPORT_MAX: usize = 15;

/// What to redirect, and where to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The sidecar's outbound listener (on 127.0.0.1 in the namespace).
    pub outbound_port: u16,
    /// The sidecar's inbound listener.
    pub inbound_port: u16,
    /// Destination ports whose outbound TCP goes through the sidecar.
    pub redirect_ports: Vec<u16>,
    /// The service's own port; inbound TCP to it goes through the sidecar.
    pub app_port: Option<u16>,
    /// The sidecar's uid, whose connections are left alone.
    pub proxy_uid: u32,
}

/// Every `iptables` invocation (without the program name), in order.
pub fn rules(plan: &Plan) -> Vec<Vec<String>> {
    let s = |items: &[&str]| items.iter().map(|i| i.to_string()).collect::<Vec<_>>();
    let mut commands: Vec<Vec<String>> = Vec::new();
    for (chain, hook) in [(OUTBOUND_CHAIN, "OUTPUT"), (INBOUND_CHAIN, "PREROUTING")] {
        commands.push(s(&["-t", "nat", "-N", chain])); // may exist already: see apply()
        commands.push(s(&["-t", "nat", "-F", chain]));
        commands.push(s(&["-t", "nat", "-C", hook, "-p", "tcp", "-j", chain])); // jump present?
    }
    let out = s(&["-t", "nat", "-A", OUTBOUND_CHAIN]);
    let uid = plan.proxy_uid.to_string();
    commands.push(
        [
            out.clone(),
            s(&["-m", "owner", "--uid-owner", &uid, "-j", "RETURN"]),
        ]
        .concat(),
    );
    commands.push([out.clone(), s(&["-d", "127.0.0.0/8", "-j", "RETURN"])].concat());
    let mut ports = plan.redirect_ports.clone();
    ports.sort_unstable();
    ports.dedup();
    let to_outbound = plan.outbound_port.to_string();
    for chunk in ports.chunks(MULTIPORT_MAX) {
        let list = chunk
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let rule = s(&[
            "-p",
            "tcp",
            "-m",
            "multiport",
            "--dports",
            &list,
            "-j",
            "REDIRECT",
            "--to-ports",
            &to_outbound,
        ]);
        commands.push([out.clone(), rule].concat());
    }
    if let Some(app_port) = plan.app_port {
        commands.push(s(&[
            "-t",
            "nat",
            "-A",
            INBOUND_CHAIN,
            "-p",
            "tcp",
            "--dport",
            &app_port.to_string(),
            "-j",
            "REDIRECT",
            "--to-ports",
            &plan.inbound_port.to_string(),
        ]));
    }
    commands
}

/// One command's outcome, as [`apply`] needs it: success, and what it printed.
pub struct Outcome {
    /// The exit status was 0.
    pub success: bool,
    /// Its stderr, else its stdout, trimmed.
    pub message: String,
}

/// Runs one iptables invocation (the arguments without the program); an error is the
/// reason it could not be started at all.
pub trait Runner {
    /// Run `iptables ARGS`.
    fn run(&mut self, args: &[String]) -> Result<Outcome, String>;
}

/// Runs the real program.
pub struct Program(pub PathBuf);

impl Runner for Program {
    fn run(&mut self, args: &[String]) -> Result<Outcome, String> {
        let output = Command::new(&self.0)
            .args(args)
            .output()
            .map_err(|err| format!("cannot run {}: {err}", self.0.display()))?;
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
        Ok(Outcome {
            success: output.status.success(),
            message: if stderr.is_empty() { stdout } else { stderr },
        })
    }
}

/// `iptables` on `path` (the directories of `$PATH`), if there is one.
pub fn find_iptables(path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let path = path?;
    std::env::split_paths(path)
        .map(|dir| dir.join("iptables"))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The sentence when the image has no iptables (`python -m proxy.interception`'s).
pub const NO_IPTABLES: &str = "iptables is not installed in the sidecar image; rebuild it on a base image that has it, or use `interception: env`";

/// Install the rules with `runner`; returns them as shell lines. The error is one
/// sentence naming the command that failed and why.
pub fn apply(plan: &Plan, runner: &mut impl Runner) -> Result<Vec<String>, String> {
    let line = |args: &[String]| {
        let mut words = vec!["iptables".to_string()];
        words.extend(args.iter().cloned());
        words.join(" ")
    };
    let mut done = Vec::new();
    for args in rules(plan) {
        let outcome = runner.run(&args)?;
        if outcome.success {
            done.push(line(&args));
            continue;
        }
        if args.iter().any(|a| a == "-N") {
            continue; // the chain exists from an earlier run: flushed next
        }
        if args.iter().any(|a| a == "-C") {
            // the jump is missing: add it
            let hook_rule: Vec<String> = args
                .iter()
                .map(|a| {
                    if a == "-C" {
                        "-A".to_string()
                    } else {
                        a.clone()
                    }
                })
                .collect();
            let added = runner.run(&hook_rule)?;
            if !added.success {
                return Err(format!("`{}` failed: {}", line(&hook_rule), added.message));
            }
            done.push(line(&hook_rule));
            continue;
        }
        return Err(format!("`{}` failed: {}", line(&args), outcome.message));
    }
    Ok(done)
}

/// `devmesh-proxy intercept ARGS` (`cli::InterceptArgs`): apply the rules, print them;
/// the exit status is 0, or 1 when they could not be installed.
pub fn main(plan: &Plan) -> u8 {
    let Some(program) = find_iptables(std::env::var_os("PATH").as_deref()) else {
        eprintln!("interception failed: {NO_IPTABLES}");
        return 1;
    };
    match apply(plan, &mut Program(program)) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            0
        }
        Err(err) => {
            eprintln!("interception failed: {err}");
            1
        }
    }
}

pub mod probe;

#[cfg(test)]
mod tests;

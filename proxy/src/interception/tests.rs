//! The cases of `tests/unit/proxy/test_interception.py`, and the Python's whole output
//! for two plans (printed by `proxy.interception.rules`), compared line by line.

use super::*;
use std::collections::VecDeque;

fn plan(outbound: u16, inbound: u16, ports: &[u16], app_port: Option<u16>) -> Plan {
    Plan {
        outbound_port: outbound,
        inbound_port: inbound,
        redirect_ports: ports.to_vec(),
        app_port,
        proxy_uid: PROXY_UID,
    }
}

fn joined(plan: &Plan) -> Vec<String> {
    rules(plan).iter().map(|args| args.join(" ")).collect()
}

#[test]
fn outbound_to_mesh_ports_goes_to_the_sidecar_except_its_own_and_loopback() {
    let lines = joined(&plan(15001, 15006, &[8000, 80, 8000], None));
    let appended: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&format!("-A {OUTBOUND_CHAIN}")))
        .collect();
    assert_eq!(
        appended,
        [
            "-t nat -A DEVMESH_OUTBOUND -m owner --uid-owner 1337 -j RETURN",
            "-t nat -A DEVMESH_OUTBOUND -d 127.0.0.0/8 -j RETURN",
            "-t nat -A DEVMESH_OUTBOUND -p tcp -m multiport --dports 80,8000 -j REDIRECT --to-ports 15001",
        ],
        "the exemptions must come before the redirect, and each port once"
    );
}

#[test]
fn inbound_to_the_service_port_goes_to_the_sidecar() {
    let lines = joined(&plan(15001, 15006, &[80], Some(8080)));
    assert!(lines.contains(
        &"-t nat -A DEVMESH_INBOUND -p tcp --dport 8080 -j REDIRECT --to-ports 15006".to_string()
    ));
    let without = joined(&plan(15001, 15006, &[80], None));
    assert!(
        !without.iter().any(|l| l.contains("-A DEVMESH_INBOUND")),
        "a service without a port has nothing to redirect inbound"
    );
}

#[test]
fn chains_are_made_flushed_and_hooked_before_rules_are_added() {
    let lines = joined(&plan(15001, 15006, &[80], Some(8080)));
    let first_rule = lines.iter().position(|l| l.contains(" -A ")).unwrap();
    assert_eq!(
        lines[..first_rule],
        [
            "-t nat -N DEVMESH_OUTBOUND",
            "-t nat -F DEVMESH_OUTBOUND",
            "-t nat -C OUTPUT -p tcp -j DEVMESH_OUTBOUND",
            "-t nat -N DEVMESH_INBOUND",
            "-t nat -F DEVMESH_INBOUND",
            "-t nat -C PREROUTING -p tcp -j DEVMESH_INBOUND",
        ]
    );
}

#[test]
fn many_ports_are_split_into_rules_multiport_accepts() {
    let ports: Vec<u16> = (9000..9032).collect();
    let lines = joined(&plan(15001, 15006, &ports, None));
    let redirects: Vec<&String> = lines.iter().filter(|l| l.contains("REDIRECT")).collect();
    assert_eq!(redirects.len(), 3);
    let mut listed: Vec<u16> = redirects
        .iter()
        .flat_map(|l| {
            let list = l.split("--dports ").nth(1).unwrap();
            let list = list.split_whitespace().next().unwrap();
            list.split(',').map(|p| p.parse::<u16>().unwrap())
        })
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, ports);
}

#[test]
fn the_same_lines_as_the_python_rules() {
    // python3 -c 'from proxy.interception import Plan, rules; ...' for these plans.
    let lines = joined(&plan(15001, 15006, &[80, 8000, 8080], Some(8080)));
    assert_eq!(
        lines,
        [
            "-t nat -N DEVMESH_OUTBOUND",
            "-t nat -F DEVMESH_OUTBOUND",
            "-t nat -C OUTPUT -p tcp -j DEVMESH_OUTBOUND",
            "-t nat -N DEVMESH_INBOUND",
            "-t nat -F DEVMESH_INBOUND",
            "-t nat -C PREROUTING -p tcp -j DEVMESH_INBOUND",
            "-t nat -A DEVMESH_OUTBOUND -m owner --uid-owner 1337 -j RETURN",
            "-t nat -A DEVMESH_OUTBOUND -d 127.0.0.0/8 -j RETURN",
            "-t nat -A DEVMESH_OUTBOUND -p tcp -m multiport --dports 80,8000,8080 -j REDIRECT --to-ports 15001",
            "-t nat -A DEVMESH_INBOUND -p tcp --dport 8080 -j REDIRECT --to-ports 15006",
        ]
    );
    let mut other = plan(15001, 15006, &(9000..9032).collect::<Vec<_>>(), None);
    other.proxy_uid = 1000;
    let lines = joined(&other);
    assert_eq!(
        lines[6..],
        [
            "-t nat -A DEVMESH_OUTBOUND -m owner --uid-owner 1000 -j RETURN",
            "-t nat -A DEVMESH_OUTBOUND -d 127.0.0.0/8 -j RETURN",
            "-t nat -A DEVMESH_OUTBOUND -p tcp -m multiport --dports 9000,9001,9002,9003,9004,9005,9006,9007,9008,9009,9010,9011,9012,9013,9014 -j REDIRECT --to-ports 15001",
            "-t nat -A DEVMESH_OUTBOUND -p tcp -m multiport --dports 9015,9016,9017,9018,9019,9020,9021,9022,9023,9024,9025,9026,9027,9028,9029 -j REDIRECT --to-ports 15001",
            "-t nat -A DEVMESH_OUTBOUND -p tcp -m multiport --dports 9030,9031 -j REDIRECT --to-ports 15001",
        ]
    );
}

/// Answers each command with the next scripted outcome, and records what it ran.
struct Scripted {
    answers: VecDeque<(bool, &'static str)>,
    ran: Vec<String>,
}

impl Runner for Scripted {
    fn run(&mut self, args: &[String]) -> Result<Outcome, String> {
        self.ran.push(args.join(" "));
        let (success, message) = self.answers.pop_front().unwrap_or((true, ""));
        Ok(Outcome {
            success,
            message: message.to_string(),
        })
    }
}

#[test]
fn a_failing_iptables_is_reported_with_the_command() {
    let mut runner = Scripted {
        answers: VecDeque::from([
            (false, "iptables: Chain already exists."),
            (false, "iptables: Permission denied (you must be root)"),
        ]),
        ran: Vec::new(),
    };
    let err = apply(&plan(15001, 15006, &[80], None), &mut runner).unwrap_err();
    assert_eq!(
        err,
        "`iptables -t nat -F DEVMESH_OUTBOUND` failed: iptables: Permission denied (you must be root)"
    );
}

#[test]
fn applying_again_keeps_the_chains_and_adds_a_missing_jump_once() {
    // A second run: both chains exist (-N fails), the outbound jump is there (-C
    // succeeds), the inbound one is missing (-C fails, so it is appended).
    let mut runner = Scripted {
        answers: VecDeque::from([
            (false, "iptables: Chain already exists."),
            (true, ""),
            (true, ""),
            (false, "iptables: Chain already exists."),
            (true, ""),
            (
                false,
                "iptables: Bad rule (does a matching rule exist in that chain?).",
            ),
        ]),
        ran: Vec::new(),
    };
    let done = apply(&plan(15001, 15006, &[80], Some(8080)), &mut runner).unwrap();
    assert!(runner
        .ran
        .contains(&"-t nat -A PREROUTING -p tcp -j DEVMESH_INBOUND".to_string()));
    assert!(!runner
        .ran
        .contains(&"-t nat -A OUTPUT -p tcp -j DEVMESH_OUTBOUND".to_string()));
    assert!(!done.iter().any(|l| l.contains(" -N ")));
    assert_eq!(
        done.last().unwrap(),
        "iptables -t nat -A DEVMESH_INBOUND -p tcp --dport 8080 -j REDIRECT --to-ports 15006"
    );
}

#[test]
fn a_real_program_that_fails_is_reported_with_its_stderr() {
    let dir = std::env::temp_dir().join(format!("devmesh-intercept-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let failing = dir.join("iptables");
    std::fs::write(
        &failing,
        "#!/bin/sh\necho 'iptables: Permission denied (you must be root)' >&2\nexit 4\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(find_iptables(Some(dir.as_os_str())), Some(failing.clone()));
    let err = apply(&plan(15001, 15006, &[80], None), &mut Program(failing)).unwrap_err();
    assert!(
        err.starts_with(
            "`iptables -t nat -F DEVMESH_OUTBOUND` failed: iptables: Permission denied"
        ),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_iptables_on_the_path_says_what_to_do() {
    assert_eq!(
        find_iptables(Some(std::ffi::OsStr::new("/nonexistent"))),
        None
    );
    assert_eq!(find_iptables(None), None);
    assert!(NO_IPTABLES.contains("interception: env"));
}

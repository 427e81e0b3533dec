//! `devmesh-proxy probe --port PORT [--path PATH]`: one health probe of the app, run
//! in the sidecar's network namespace by the docker runtime after it restarts a
//! service (the Rust sidecar image has no Python for `readiness.probe_script`).
//!
//! The probe is the sidecar's own ([`crate::control::health`]): a TCP connect to
//! 127.0.0.1:PORT, or `GET PATH` where one is given (any answer below 500 passes).
//! Exit status 0 when it passes, 1 when it does not (what was seen on stderr), 2
//! for bad arguments.

use crate::control::health::{HealthProbe, Target};

/// `devmesh-proxy probe ARGS` (`cli::ProbeArgs`): the exit status (see the module's doc).
pub fn main(target: Target) -> u8 {
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

    #[test]
    fn a_port_nothing_listens_on_fails_and_one_that_listens_passes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = || Target {
            app_port: Some(port),
            path: None,
        };
        assert_eq!(main(target()), 0);
        drop(listener);
        assert_eq!(main(target()), 1);
    }
}

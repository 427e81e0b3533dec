//! `devmesh-proxy --bootstrap PATH`: one sidecar (or gateway) process.

fn main() {
    eprintln!("devmesh-proxy: not yet a working sidecar; the Python sidecar (python -m proxy) is the one in use");
    std::process::exit(2);
}

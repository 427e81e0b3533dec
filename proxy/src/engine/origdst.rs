//! Where a redirected connection was going before iptables sent it to the sidecar
//! (`proxy/origdst.py`): Linux keeps the original destination of a connection that a
//! `REDIRECT` rule rewrote, and `getsockopt(SOL_IP, SO_ORIGINAL_DST)` returns it
//! (socket2's safe `original_dst_v4`). A connection that was not redirected
//! (`HTTP_PROXY` mode, the local runtime) has none.

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// `(ip, port)` the client connected to before redirection, or `None`.
pub fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    if !local.is_ipv4() {
        return None;
    }
    let sock = socket2::SockRef::from(stream);
    let original = sock.original_dst_v4().ok()?.as_socket()?; // ENOENT: not redirected
    unredirected(original, local)
}

/// `original`, unless it is the address the connection arrived at (conntrack knows the
/// connection but nothing rewrote it).
pub fn unredirected(original: SocketAddr, local: SocketAddr) -> Option<SocketAddr> {
    (original != local).then_some(original)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_that_was_not_rewritten_is_none() {
        let here: SocketAddr = "127.0.0.1:15001".parse().unwrap();
        let there: SocketAddr = "10.0.0.7:80".parse().unwrap();
        assert_eq!(unredirected(here, here), None);
        assert_eq!(unredirected(there, here), Some(there));
    }

    #[tokio::test]
    async fn a_plain_connection_has_no_original_destination() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let _client = client.unwrap();
        assert_eq!(original_destination(&accepted.unwrap().0), None);
    }
}

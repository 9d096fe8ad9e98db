//! Socket setup shared by both engines, and the io_uring probe.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::Error;

/// Accept backlog for every listener.
const BACKLOG: i32 = 4096;

/// Binds `count` listeners on `addr`.
///
/// With `count > 1` they share the port through SO_REUSEPORT and the kernel
/// spreads new connections across them. A port someone else holds (even
/// another ringcast, which could otherwise join the SO_REUSEPORT group) is
/// an "address in use" error: for a fixed port, a plain bind without
/// SO_REUSEPORT checks first; for port 0 the kernel never hands out a port
/// that another SO_REUSEPORT group uses.
///
/// Every listener carries `sndbuf` as SO_SNDBUF, which accepted sockets
/// inherit: setting it on the listener keeps the accept path free of extra
/// syscalls and stops Linux autotuning from growing a stalled client's
/// kernel backlog to megabytes.
pub(crate) fn bind_listeners(
    addr: SocketAddr,
    count: usize,
    sndbuf: usize,
) -> Result<Vec<TcpListener>, Error> {
    let bind_err = |source| Error::Bind { addr, source };
    let reuseport = count > 1;
    if reuseport && addr.port() != 0 {
        let probe = new_socket(addr, false).map_err(bind_err)?;
        probe.bind(&addr.into()).map_err(bind_err)?;
    }
    let first = new_socket(addr, reuseport).map_err(bind_err)?;
    first.bind(&addr.into()).map_err(bind_err)?;
    let port_addr = first
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| bind_err(io::Error::other("bound socket has no address")))?;
    let mut listeners = vec![finish_listener(first, sndbuf).map_err(bind_err)?];
    for _ in 1..count {
        let socket = new_socket(port_addr, true).map_err(bind_err)?;
        socket.bind(&port_addr.into()).map_err(bind_err)?;
        listeners.push(finish_listener(socket, sndbuf).map_err(bind_err)?);
    }
    Ok(listeners)
}

fn new_socket(addr: SocketAddr, reuseport: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Rebinding a port with connections in TIME_WAIT after a restart is fine.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuseport)?;
    Ok(socket)
}

fn finish_listener(socket: Socket, sndbuf: usize) -> io::Result<TcpListener> {
    socket.set_send_buffer_size(sndbuf)?;
    socket.set_tcp_nodelay(true)?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Checks that this process may set up an io_uring instance.
///
/// Fails where the kernel lacks io_uring, where the
/// `kernel.io_uring_disabled` sysctl forbids it, or where a seccomp filter
/// blocks `io_uring_setup`.
pub(crate) fn probe_uring() -> io::Result<()> {
    io_uring::IoUring::new(2).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuseport_listeners_share_one_port() {
        let ls = bind_listeners("127.0.0.1:0".parse().expect("addr"), 3, 65536).expect("bind");
        let ports: Vec<u16> = ls
            .iter()
            .map(|l| l.local_addr().expect("addr").port())
            .collect();
        assert!(ports[0] != 0 && ports.iter().all(|p| *p == ports[0]));
    }

    #[test]
    fn a_port_in_use_is_an_error_even_for_reuseport() {
        let first = bind_listeners("127.0.0.1:0".parse().expect("addr"), 2, 65536).expect("bind");
        let addr = first[0].local_addr().expect("addr");
        assert!(matches!(
            bind_listeners(addr, 2, 65536),
            Err(Error::Bind { .. })
        ));
        assert!(matches!(
            bind_listeners(addr, 1, 65536),
            Err(Error::Bind { .. })
        ));
    }
}

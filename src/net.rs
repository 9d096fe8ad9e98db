//! Socket setup shared by both engines, and the io_uring probe.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::RawFd;

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::Error;

/// Accept backlog for every listener.
const BACKLOG: i32 = 4096;

/// Binds `count` listeners on `addr`.
///
/// With `count > 1` they share the port through SO_REUSEPORT and the kernel
/// spreads new connections across them. A plain bind without SO_REUSEPORT
/// comes first, so a port that anyone else holds (even another ringcast)
/// fails with "address in use" instead of being silently shared; it also
/// fixes the port when `addr` asks for port 0.
///
/// Every listener carries `sndbuf` as SO_SNDBUF, which accepted sockets
/// inherit: setting it on the listener keeps the accept path free of extra
/// syscalls and stops Linux autotuning from growing a stalled client's
/// kernel backlog to megabytes.
pub fn bind_listeners(
    addr: SocketAddr,
    count: usize,
    sndbuf: usize,
) -> Result<Vec<TcpListener>, Error> {
    let bind_err = |source| Error::Bind { addr, source };
    let probe = new_socket(addr).map_err(bind_err)?;
    probe.bind(&addr.into()).map_err(bind_err)?;
    let port_addr = probe
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| bind_err(io::Error::other("bound socket has no address")))?;
    if count <= 1 {
        return Ok(vec![finish_listener(probe, sndbuf).map_err(bind_err)?]);
    }
    drop(probe);
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = new_socket(port_addr).map_err(bind_err)?;
        socket.set_reuse_port(true).map_err(bind_err)?;
        socket.bind(&port_addr.into()).map_err(bind_err)?;
        listeners.push(finish_listener(socket, sndbuf).map_err(bind_err)?);
    }
    Ok(listeners)
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
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
pub fn probe_uring() -> io::Result<()> {
    io_uring::IoUring::new(2).map(drop)
}

/// True when the socket behind `fd` has no room in its send buffer right now.
///
/// Only asked when a client's queue is full, so the syscall stays off the
/// per-message path.
pub fn send_buffer_full(fd: RawFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    #[allow(unsafe_code)]
    // SAFETY: callers pass the fd of a socket they own and keep open for the
    // duration of this call; the borrow does not outlive it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(borrowed, PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => true,
        Ok(_) => fds[0]
            .revents()
            .is_none_or(|r| !r.contains(PollFlags::POLLOUT)),
        // Treat an error as not draining: the write path will see it and close.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpStream;
    use std::os::fd::AsRawFd;

    #[test]
    fn reuseport_listeners_share_one_port() {
        let ls = bind_listeners(
            "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
            3,
            65536,
        )
        .expect("bind");
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

    #[test]
    fn send_buffer_full_tracks_a_peer_that_does_not_read() {
        let ls = bind_listeners("127.0.0.1:0".parse().expect("addr"), 1, 16 * 1024).expect("bind");
        let _client = TcpStream::connect(ls[0].local_addr().expect("addr")).expect("connect");
        ls[0].set_nonblocking(false).expect("blocking");
        let (mut server_side, _) = ls[0].accept().expect("accept");
        assert!(!send_buffer_full(server_side.as_raw_fd()));
        server_side.set_nonblocking(true).expect("nonblocking");
        let chunk = [0u8; 16 * 1024];
        // The peer never reads: writes must eventually stop fitting.
        for _ in 0..10_000 {
            if server_side.write(&chunk).is_err() {
                break;
            }
        }
        assert!(send_buffer_full(server_side.as_raw_fd()));
    }
}

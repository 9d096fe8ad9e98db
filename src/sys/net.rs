//! Socket setup shared by both engines, and the io_uring probe.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::Error;

/// Submission queue entries of each io_uring runtime: the probe creates a
/// ring of the same size, so it fails where the runtimes would. Why 1,024:
/// docs/decisions/0014-submission-queue-1024-entries.md.
pub(crate) const URING_ENTRIES: u32 = 1024;

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
/// Every listener carries the [`Sockets`] options, which accepted sockets
/// inherit, so the accept path makes no extra syscalls.
///
/// `nonblocking` is for the tokio engine, as epoll needs. Listeners for
/// io_uring stay blocking: on kernels before 5.19 an io_uring accept on a
/// non-blocking socket completes with EAGAIN instead of waiting, and the
/// accept loop would spin.
pub(crate) fn bind_listeners(
    addr: SocketAddr,
    count: usize,
    sockets: &Sockets,
    nonblocking: bool,
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
    let mut listeners = vec![finish_listener(first, sockets, nonblocking).map_err(bind_err)?];
    for _ in 1..count {
        let socket = new_socket(port_addr, true).map_err(bind_err)?;
        socket.bind(&port_addr.into()).map_err(bind_err)?;
        listeners.push(finish_listener(socket, sockets, nonblocking).map_err(bind_err)?);
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

/// What every client socket is set to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sockets {
    /// SO_SNDBUF: bounds what a slow client holds in the kernel, and stops
    /// Linux autotuning from growing it to megabytes.
    pub(crate) sndbuf: usize,
    /// TCP keepalive: after this long idle, probe the peer every quarter of
    /// it (at least a second), and give up after four unanswered probes.
    pub(crate) keepalive: Option<std::time::Duration>,
    /// TCP_USER_TIMEOUT: drop the connection when sent data stays
    /// unacknowledged this long (a pulled cable, a vanished NAT entry).
    pub(crate) user_timeout: Option<std::time::Duration>,
}

fn finish_listener(
    socket: Socket,
    sockets: &Sockets,
    nonblocking: bool,
) -> io::Result<TcpListener> {
    socket.set_send_buffer_size(sockets.sndbuf)?;
    if let Some(idle) = sockets.keepalive {
        let every = (idle / 4).max(std::time::Duration::from_secs(1));
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(every)
            .with_retries(4);
        socket.set_tcp_keepalive(&keepalive)?;
    }
    socket.set_tcp_user_timeout(sockets.user_timeout)?;
    socket.set_tcp_nodelay(true)?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(nonblocking)?;
    Ok(socket.into())
}

/// What the kernel made of `--sndbuf` on `listener` (which accepted
/// sockets inherit): the size it grants, undoubled, as `--sndbuf` counts
/// it. Less than asked when `net.core.wmem_max` caps it.
pub(crate) fn sndbuf_granted(listener: &TcpListener) -> Option<usize> {
    socket2::SockRef::from(listener)
        .send_buffer_size()
        .ok()
        .map(|doubled| doubled / 2)
}

/// `net.core.wmem_max`, the most `SO_SNDBUF` an unprivileged socket gets.
pub(crate) fn wmem_max() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/net/core/wmem_max")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Stops a listening socket for good, without closing its descriptor:
/// connects that arrive from now on are refused, those still in the backlog
/// are reset, and an accept in flight (an io_uring op holds its own
/// reference) completes with an error.
pub(crate) fn stop_listening(listener: std::os::fd::RawFd) {
    let _ = nix::sys::socket::shutdown(listener, nix::sys::socket::Shutdown::Read);
}

/// Checks that this process may set up the io_uring instances a core
/// will: the runtime's ring, and its send ring, of the same sizes, with the
/// multishot polls the send ring relies on.
///
/// Fails where the kernel lacks io_uring, where the
/// `kernel.io_uring_disabled` sysctl forbids it, where a seccomp filter
/// blocks `io_uring_setup`, or where the ring's memory does not fit in
/// RLIMIT_MEMLOCK (kernels before 5.12 count it there).
///
/// The probe runs on a thread of its own: tearing a ring down sends
/// task_work (TIF_NOTIFY_SIGNAL) to every thread that used it, and a
/// caller blocked then in a read with a timeout would see EINTR.
pub(crate) fn probe_uring() -> io::Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = io_uring::IoUring::new(URING_ENTRIES)?;
            crate::sys::sendring::probe()?;
            drop(runtime);
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the io_uring probe panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCKETS: Sockets = Sockets {
        sndbuf: 65536,
        keepalive: Some(std::time::Duration::from_secs(7)),
        user_timeout: Some(std::time::Duration::from_secs(9)),
    };

    #[test]
    fn accepted_sockets_inherit_the_listeners_options() {
        let ls =
            bind_listeners("127.0.0.1:0".parse().expect("addr"), 1, &SOCKETS, false).expect("bind");
        let _client =
            std::net::TcpStream::connect(ls[0].local_addr().expect("addr")).expect("connect");
        let (accepted, _) = ls[0].accept().expect("accept");
        let s = socket2::SockRef::from(&accepted);
        assert!(s.keepalive().expect("keepalive"));
        assert_eq!(
            s.tcp_keepalive_time().expect("idle"),
            std::time::Duration::from_secs(7)
        );
        assert_eq!(
            s.tcp_keepalive_interval().expect("interval"),
            std::time::Duration::from_secs(1)
        );
        assert_eq!(s.tcp_keepalive_retries().expect("retries"), 4);
        assert_eq!(
            s.tcp_user_timeout().expect("user timeout"),
            Some(std::time::Duration::from_secs(9))
        );
    }

    #[test]
    fn reuseport_listeners_share_one_port() {
        let ls =
            bind_listeners("127.0.0.1:0".parse().expect("addr"), 3, &SOCKETS, false).expect("bind");
        let ports: Vec<u16> = ls
            .iter()
            .map(|l| l.local_addr().expect("addr").port())
            .collect();
        assert!(ports[0] != 0 && ports.iter().all(|p| *p == ports[0]));
    }

    #[test]
    fn a_port_in_use_is_an_error_even_for_reuseport() {
        let first =
            bind_listeners("127.0.0.1:0".parse().expect("addr"), 2, &SOCKETS, false).expect("bind");
        let addr = first[0].local_addr().expect("addr");
        assert!(matches!(
            bind_listeners(addr, 2, &SOCKETS, false),
            Err(Error::Bind { .. })
        ));
        assert!(matches!(
            bind_listeners(addr, 1, &SOCKETS, true),
            Err(Error::Bind { .. })
        ));
    }

    #[test]
    fn only_tokio_listeners_are_non_blocking() {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let nonblocking = |asked| {
            let ls = bind_listeners("127.0.0.1:0".parse().expect("addr"), 1, &SOCKETS, asked)
                .expect("bind");
            let flags = fcntl(&ls[0], FcntlArg::F_GETFL).expect("flags");
            OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK)
        };
        assert!(nonblocking(true), "tokio's listeners");
        assert!(!nonblocking(false), "io_uring's listeners");
    }
}

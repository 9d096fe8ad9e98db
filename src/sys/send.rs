//! How the tokio engine hands bytes to a client socket at once (the uring
//! engine sends through its send ring, [`crate::sys::sendring`]).

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use nix::sys::socket::{MsgFlags, SockaddrStorage, sendmsg};

/// Sends what `bufs` hold to the connected socket `fd` without blocking,
/// whatever the socket's own mode: `Ok(n)` for the bytes the kernel took,
/// `WouldBlock` when its send buffer is full. A peer that has gone is an
/// error, never a SIGPIPE.
pub(crate) fn send_now(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    sendmsg::<SockaddrStorage>(
        fd,
        bufs,
        &[],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd as _;

    use super::*;

    #[test]
    fn sends_gathered_buffers_and_reports_a_full_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let n = send_now(
            client.as_raw_fd(),
            &[IoSlice::new(b"hello "), IoSlice::new(b"world\n")],
        )
        .expect("send");
        assert_eq!(n, 12);
        let mut got = [0u8; 12];
        server.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"hello world\n");
        // Nobody reads: the kernel's buffers fill and it says so at once.
        let chunk = vec![0u8; 1 << 16];
        let full =
            (0..10_000).find_map(|_| send_now(client.as_raw_fd(), &[IoSlice::new(&chunk)]).err());
        assert_eq!(
            full.map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock),
            "a blocking socket must not block"
        );
    }
}

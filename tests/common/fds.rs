//! The sockets this process has open, to find a descriptor leak.

use std::collections::HashSet;

use super::wait_for_quietly;

/// The sockets this process has open, by inode.
///
/// Sockets, not every descriptor: runtimes start their timers lazily, and
/// an earlier test's runtime may still be closing its own descriptors in
/// the background. (`scripts/soak.sh` checks every descriptor of a server
/// process of its own.)
///
/// The first tokio runtime of a process opens the signal driver's socket
/// pair, which stays open for good; it is opened here first, so that a
/// server whose runtimes start after the count is not taken for a leak.
pub fn sockets() -> HashSet<String> {
    static SIGNAL_PAIR: std::sync::Once = std::sync::Once::new();
    SIGNAL_PAIR.call_once(|| {
        drop(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        )
    });
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| {
            let t = t.to_string_lossy();
            t.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(String::from)
        })
        .collect()
}

/// Waits until every socket this process has open was already open in
/// `before`: every client since, and the server's end of it, is closed.
pub fn wait_sockets_closed(before: &HashSet<String>) {
    let mut left = Vec::new();
    let found = wait_for_quietly(|| {
        left = sockets().difference(before).cloned().collect();
        left.is_empty()
    });
    assert!(
        found,
        "descriptor leak: sockets {left:?} still open, opened after the clients came:\n{}",
        describe_fds()
    );
}

/// This process's descriptors, with the TCP state and addresses of sockets,
/// for the failure message.
fn describe_fds() -> String {
    // /proc/net/tcp: "sl local rem st ... inode" with hex addresses.
    let tcp = std::fs::read_to_string("/proc/self/net/tcp").unwrap_or_default();
    let socket = |inode: &str| {
        tcp.lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(9) == Some(&inode))
            .map(|f| format!("local {} remote {} state {}", f[1], f[2], f[3]))
            .unwrap_or_default()
    };
    let mut out = String::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let target = std::fs::read_link(entry.path())
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        let inode = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
            .map(socket)
            .unwrap_or_default();
        out += &format!("  {:?} -> {target} {inode}\n", entry.file_name());
    }
    out
}

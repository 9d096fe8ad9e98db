//! How the bridge names the NATS server it is on, picks the next one to
//! dial, and logs the client's events, a line a second at most per kind.

use crate::policy::admission::limits::Throttle;

/// Which server the client is on. A server's `INFO` names it by the
/// address it listens on, which for most is `0.0.0.0`; so the bridge picks
/// the server to dial itself, and notes it.
#[derive(Debug, Default)]
pub(super) struct Dialled {
    /// The address the client was last told to dial.
    pub(super) last: Option<async_nats::ServerAddr>,
    /// `last` at the latest `Connected` event: the server the client is on.
    pub(super) on: Option<async_nats::ServerAddr>,
}

/// One throttle per kind of NATS event, so a reconnect storm or a flood of
/// slow-consumer events costs a line a second each.
#[derive(Debug, Default)]
pub(super) struct EventThrottles {
    connected: Throttle,
    disconnected: Throttle,
    slow: Throttle,
    other: Throttle,
}

/// The server to dial next, as async-nats picks by default: at random,
/// among those of the pool that failed the fewest times in a row.
pub(super) fn pick(servers: &[async_nats::Server]) -> Option<&async_nats::Server> {
    use std::hash::{BuildHasher as _, Hasher as _};
    let fewest = servers.iter().map(|s| s.failed_attempts).min()?;
    let least = || servers.iter().filter(move |s| s.failed_attempts == fewest);
    // std seeds each `RandomState` afresh.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let nth = usize::try_from(random % least().count() as u64).unwrap_or(0);
    least().nth(nth)
}

/// How the log names the server a client is on, and the server's name:
/// the URL it was dialled at (`on`, without credentials); else, as its
/// `INFO` says, the address it listens on, as a URL only if that is an
/// address one can dial (`0.0.0.0:4222` is not: it shows as just that, with
/// the server's name to tell it from others); else `url`.
pub(super) fn server_named(
    url: &str,
    on: Option<&async_nats::ServerAddr>,
    info: Option<&async_nats::ServerInfo>,
) -> (String, String) {
    let bracketed = |host: &str| {
        if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        }
    };
    let info = info.filter(|i| i.port != 0);
    let name = info.map(|i| i.server_name.clone()).unwrap_or_default();
    let server = match (on, info) {
        (Some(on), _) => format!("{}://{}:{}", on.scheme(), bracketed(on.host()), on.port()),
        (None, Some(info)) => {
            let listens = format!("{}:{}", bracketed(&info.host), info.port);
            let anywhere = info
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified());
            if anywhere {
                listens
            } else {
                format!("nats://{listens}")
            }
        }
        (None, None) => url.to_owned(),
    };
    (server, name)
}

/// Logs a NATS event. `on` is the URL the client was dialled at for its
/// latest `Connected` event, `server` its latest server `INFO`: on the
/// bridge's one-thread runtime the client stores a new server's `INFO`
/// before its event task runs, so at `Connected` both name the server just
/// connected to (after a failover, not the one `--cluster` names), and at
/// `Disconnected` the one lost.
pub(super) fn log_event(
    event: &async_nats::Event,
    url: &str,
    on: Option<&async_nats::ServerAddr>,
    server: Option<&async_nats::ServerInfo>,
    throttles: &EventThrottles,
) {
    use async_nats::Event;
    let (server, server_name) = server_named(url, on, server);
    match event {
        Event::Connected => {
            if let Some(suppressed) = throttles.connected.allow() {
                tracing::info!(%server, %server_name, also_since_last_line = suppressed, "cluster: connected to NATS");
            }
        }
        Event::Disconnected => {
            if let Some(suppressed) = throttles.disconnected.allow() {
                tracing::warn!(
                    %server,
                    %server_name,
                    also_since_last_line = suppressed,
                    "cluster: lost NATS; local broadcast goes on, lines for other nodes are dropped (counted) until it is back; reconnecting with backoff"
                );
            }
        }
        Event::SlowConsumer(_) => {
            if let Some(suppressed) = throttles.slow.allow() {
                tracing::warn!(
                    %server,
                    also_since_last_line = suppressed,
                    "cluster: NATS dropped messages for this node: it could not take them off the connection fast enough"
                );
            }
        }
        other => {
            if let Some(suppressed) = throttles.other.allow() {
                tracing::info!(%server, event = %other, also_since_last_line = suppressed, "cluster: NATS event");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_names_the_url_dialled_else_what_info_says_it_listens_on() {
        let info = |host: &str| async_nats::ServerInfo {
            host: host.into(),
            port: 4222,
            server_name: "n1".into(),
            ..Default::default()
        };
        let named = |url, on: Option<&str>, info: Option<async_nats::ServerInfo>| {
            let on = on.map(|on| on.parse::<async_nats::ServerAddr>().expect("a URL"));
            server_named(url, on.as_ref(), info.as_ref())
        };
        let pair = |server: &str, name: &str| (server.to_owned(), name.to_owned());
        // The URL dialled, without its credentials, whatever INFO says.
        assert_eq!(
            named(
                "u",
                Some("nats://user:secret@10.0.0.7:4222"),
                Some(info("0.0.0.0"))
            ),
            pair("nats://10.0.0.7:4222", "n1")
        );
        assert_eq!(
            named("u", Some("[fd00::2]:4223"), Some(info("::"))),
            pair("nats://[fd00::2]:4223", "n1")
        );
        // Without it, an address one can dial is a URL; 0.0.0.0 is not.
        assert_eq!(
            named("u", None, Some(info("10.0.0.7"))),
            pair("nats://10.0.0.7:4222", "n1")
        );
        assert_eq!(
            named("u", None, Some(info("0.0.0.0"))),
            pair("0.0.0.0:4222", "n1")
        );
        assert_eq!(named("u", None, Some(info("::"))), pair("[::]:4222", "n1"));
        // Before any INFO, what --cluster says.
        assert_eq!(
            named("nats://u:4222", None, None),
            pair("nats://u:4222", "")
        );
    }

    #[test]
    fn the_server_dialled_next_is_one_of_those_that_failed_least() {
        let server = |port: u16, failed_attempts| async_nats::Server {
            addr: format!("127.0.0.1:{port}").parse().expect("an address"),
            failed_attempts,
            did_connect: false,
            is_discovered: false,
            last_error: None,
        };
        let pool = [server(1, 2), server(2, 0), server(3, 1), server(4, 0)];
        let picked: std::collections::BTreeSet<u16> = (0..200)
            .map(|_| pick(&pool).expect("a server").addr.port())
            .collect();
        assert_eq!(picked, [2, 4].into(), "at random among the fewest failures");
        assert!(pick(&[]).is_none());
    }
}

//! A place's whole life, written once for both engines: accept and admit
//! clients, answer `/clients`, sweep idle clients, and at shutdown move
//! clients off (lame duck), stop reading, drain and close.
//!
//! A place is where connections live: a core on `uring`, the whole runtime
//! on `tokio`. An engine describes its place through [`Place`]: how it
//! spawns, accepts and lists connections, and how its drain begins. Each
//! engine's own folder keeps only its threads and runtime, its `Conn`, its
//! writer and timer, and how a line crosses cores.

use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::session::{self, CloseReason, Host, Link as _, Session, Slot};
use super::{Control, Endpoint, Roster, failpoint};
use crate::ops::clients;
use crate::ops::metrics::Shard;
use crate::policy::admission::limits::{AcceptBackoff, Gate};
use crate::policy::run::Run;
use crate::sys::net;

/// Idle sweeps per `--idle-timeout`.
const IDLE_TICKS: u64 = 4;

/// A connection, as a place's roster and tasks hold it.
pub(crate) type Member<P> = <P as Place>::Shared<<P as Host>::Link>;

/// What the lifecycle needs from an engine's place, beyond what its
/// connections need ([`Host`]).
///
/// Both engines run the lifecycle's tasks as local tasks of the place's
/// thread (`spawn_local`): a `uring` core's runtime is a `LocalSet`, and
/// the `tokio` engine runs its main task in one.
pub(crate) trait Place: Host + Sized + 'static {
    /// How the place and its connections are held by its tasks and its
    /// roster: `Rc` on a `uring` core, `Arc` on `tokio`.
    type Shared<T: 'static>: Clone + Deref<Target = T> + 'static;
    /// A listening socket on the engine's runtime, and what it accepts.
    type Listener: AsRawFd;
    type Stream;

    /// Runs `f` on the place's connections, to change them (admit,
    /// forget, snapshot). `f` must not close one: closing takes it off
    /// the roster.
    fn roster<T>(&self, f: impl FnOnce(&mut Roster<Member<Self>>) -> T) -> T;
    /// Runs `f` on the place's connections, to look at them only: on
    /// tokio under the read lock, so deliveries taking the snapshot go on
    /// meanwhile. `f` must not close one.
    fn roster_ref<T>(&self, f: impl FnOnce(&Roster<Member<Self>>) -> T) -> T;
    /// Everyone connected now; see [`Roster::snapshot`].
    fn snapshot(&self) -> Arc<[Member<Self>]> {
        self.roster(Roster::snapshot)
    }
    /// The next connection on `listener`.
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>>;
    /// A new connection, not yet listed.
    fn connect(session: Session, stream: Self::Stream) -> Member<Self>;
    /// Starts the tasks of a connection just listed: its reader, and on
    /// `tokio` its writer.
    fn spawn_conn(place: &Self::Shared<Self>, member: Member<Self>);
    /// Shutdown began: from now on [`Host::stopping`] holds.
    fn stop(&self);
    /// Advances [`Host::tick`] and returns the new tick.
    fn next_tick(&self) -> u64;
    /// No reader of the place is left: begins the drain, after which
    /// [`Host::draining`] holds (at once, or once the lines in flight
    /// towards the place are delivered) and each connection closes once
    /// its queue is out.
    fn drain(&self) -> impl Future<Output = ()>;
}

/// Runs a place: answers `/clients`, sweeps idle clients, accepts until
/// shutdown begins, then shuts down gracefully ([`serve`]), or closes
/// everyone at once when the drain timeout passes. The engine's own tasks
/// (its writers, its timer) are started by the engine.
pub(crate) async fn run<P: Place>(
    place: P::Shared<P>,
    listening: Vec<(P::Listener, Endpoint)>,
    inspections: mpsc::UnboundedReceiver<clients::Request>,
    control: &Control,
) {
    tokio::task::spawn_local(answer_inspections::<P>(place.clone(), inspections));
    if let Some(timeout) = place.state().idle_timeout {
        tokio::task::spawn_local(sweep_idle::<P>(place.clone(), timeout));
    }
    tokio::select! {
        () = serve::<P>(&place, listening, control) => {}
        () = control.abort.cancelled() => close_all(&*place, CloseReason::DrainTimeout),
    }
}

/// Accepts until shutdown begins, moves clients off in lame duck mode,
/// then stops reading, drains, and returns once every connection closed.
async fn serve<P: Place>(
    place: &P::Shared<P>,
    listening: Vec<(P::Listener, Endpoint)>,
    control: &Control,
) {
    futures_util::future::join_all(
        listening
            .into_iter()
            .map(|(listener, endpoint)| accept::<P>(place, listener, endpoint, control)),
    )
    .await;
    if let Some(over) = place.state().lame_duck {
        lame_duck(&**place, over, &control.stop).await;
    }
    control.stop.cancelled().await;
    stop_reading(&**place).await;
    place.drain().await;
    wait_changed(&**place, || place.roster_ref(|r| r.is_empty())).await;
}

/// Accepts `endpoint` clients on `listener` until accepting ends.
async fn accept<P: Place>(
    place: &P::Shared<P>,
    listener: P::Listener,
    endpoint: Endpoint,
    control: &Control,
) {
    let state = place.state();
    let gate = if endpoint.handshakes_first() {
        &state.limits.handshakes
    } else {
        &state.limits.clients
    };
    let listener = Listener::<P> {
        place,
        listener,
        endpoint,
    };
    accept_until_stopped(&listener, state.core, gate, control).await;
}

/// Lists a new connection and starts its tasks.
fn admit<P: Place>(place: &P::Shared<P>, stream: P::Stream, peer: SocketAddr, endpoint: &Endpoint) {
    let state = place.state();
    let tls = match endpoint.tls() {
        Ok(tls) => tls,
        Err(e) => {
            tracing::error!(error = %e, %peer, "cannot start a TLS session; closing the connection");
            state.limits.handshakes.release(peer);
            return;
        }
    };
    let id = state.next_id();
    let session = Session::new(
        id,
        peer,
        state.core,
        endpoint.transport,
        tls,
        &state.settings,
        place.tick(),
    );
    let member = P::connect(session, stream);
    let key = place.roster(|r| r.insert(member.clone()));
    member.with(|s| s.set_key(key));
    place.shard().accepted();
    if endpoint.handshakes_first() {
        place.shard().handshake_begun();
    }
    state.reader_started();
    tracing::debug!(conn = id, %peer, core = state.core, "connected");
    P::spawn_conn(place, member);
}

/// Takes a closed connection off the place's roster and gives back the
/// slot it held: what [`Host::forget`] does on both engines.
pub(crate) fn forget<P: Place>(place: &P, link: &P::Link) {
    let (key, slot, peer) = link.with(|s| (s.key(), s.slot(), s.peer()));
    place.roster(|r| r.remove(key));
    let state = place.state();
    match slot {
        Slot::Client => state.limits.clients.release(peer),
        Slot::Handshake => state.limits.handshakes.release(peer),
    }
    state.changed.notify_waiters();
}

/// Offers `runs` to everyone connected to the place now. Returns whether
/// it waited for one of them.
pub(crate) async fn deliver<P: Place>(place: &P, runs: &[Run]) -> bool {
    session::deliver(place, &place.snapshot(), runs).await
}

/// Closes every connection of the place now.
pub(crate) fn close_all<P: Place>(place: &P, reason: CloseReason) {
    for link in place.snapshot().iter() {
        session::close(place, link, reason);
    }
}

/// Closes the longest-connected client; false if there is none.
fn close_one<P: Place>(place: &P, reason: CloseReason) -> bool {
    // Cloned first: closing takes it off the roster.
    let oldest = place.roster_ref(|r| r.iter().next().cloned());
    oldest.is_some_and(|link| {
        session::close(place, &link, reason);
        true
    })
}

/// Lame duck mode: closes the place's clients one by one, spread evenly
/// over `over`, until none is left or `stop` fires.
async fn lame_duck<P: Place>(
    place: &P,
    over: Duration,
    stop: &tokio_util::sync::CancellationToken,
) {
    let n = place.roster_ref(|r| r.len());
    if n == 0 {
        return;
    }
    let every = over / u32::try_from(n).unwrap_or(u32::MAX);
    let mut next = tokio::time::Instant::now();
    loop {
        next += every;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        if !close_one(place, CloseReason::LameDuck) {
            return;
        }
    }
}

/// Ends every reader: shutting down the read side makes pending reads
/// complete, and `stopping` tells readers not to read again.
async fn stop_reading<P: Place>(place: &P) {
    place.stop();
    place.roster_ref(|r| {
        for link in r.iter() {
            link.shutdown(Shutdown::Read);
        }
    });
    wait_changed(place, || place.state().readers() == 0).await;
}

/// Waits until `ready()` holds, looking again whenever a reader exits or
/// a connection closes.
async fn wait_changed<P: Place>(place: &P, ready: impl Fn() -> bool) {
    notified_until(&place.state().changed, ready).await;
}

/// Tells whoever asks (`/clients`) how the place's clients are doing, a
/// chunk of them at a time.
async fn answer_inspections<P: Place>(
    place: P::Shared<P>,
    mut requests: mpsc::UnboundedReceiver<clients::Request>,
) {
    while let Some(request) = requests.recv().await {
        clients::answer(&place.snapshot(), request, |c| c.with(|s| s.info())).await;
    }
}

/// Sweeps for idle clients [`IDLE_TICKS`] times per `timeout`, forever.
/// Each sweep advances the tick that readers stamp on their connection
/// when data arrives, then closes every connection stamped more than
/// [`IDLE_TICKS`] ticks ago: a silent client goes within 1.25 × `timeout`.
async fn sweep_idle<P: Place>(place: P::Shared<P>, timeout: Duration) {
    let mut ticker =
        tokio::time::interval((timeout / IDLE_TICKS as u32).max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    loop {
        ticker.tick().await;
        let tick = place.next_tick();
        session::close_idle(&*place, &place.snapshot(), tick, IDLE_TICKS);
    }
}

/// Waits on `notify` until `ready()` holds. The check comes after the
/// waiter registers, so a `notify_waiters` in between is never missed.
pub(crate) async fn notified_until(notify: &Notify, ready: impl Fn() -> bool) {
    loop {
        let notified = pin!(notify.notified());
        if ready() {
            return;
        }
        notified.await;
    }
}

/// A listening socket, as the accept loop sees it.
trait Acceptor {
    type Stream;
    /// The next connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>>;
    /// Refuses new connects, and ends the accept in flight.
    fn halt(&self);
    /// The counters of the thread the loop runs on.
    fn shard(&self) -> &Shard;
    /// Takes in a connection the gate let through.
    fn admit(&self, stream: Self::Stream, peer: SocketAddr);
}

/// One of a place's listeners, and what its clients speak.
struct Listener<'a, P: Place> {
    place: &'a P::Shared<P>,
    listener: P::Listener,
    endpoint: Endpoint,
}

impl<P: Place> Acceptor for Listener<'_, P> {
    type Stream = P::Stream;

    fn accept(&self) -> impl Future<Output = io::Result<(P::Stream, SocketAddr)>> {
        P::accept(&self.listener)
    }

    fn halt(&self) {
        // The listener itself lives until every op on it has completed.
        net::stop_listening(self.listener.as_raw_fd());
    }

    fn shard(&self) -> &Shard {
        self.place.shard()
    }

    fn admit(&self, stream: P::Stream, peer: SocketAddr) {
        admit::<P>(self.place, stream, peer, &self.endpoint);
    }
}

/// Accepts connections until accepting ends, and reports on
/// `control.accepting` once it accepts.
///
/// Every accepted connection passes the [`Gate`] (`--max-clients`) before
/// it is admitted; one over the limit is dropped, which closes it. When
/// the process is out of descriptors, accept pauses with a bounded backoff
/// while connected clients go on being served, and resumes as soon as any
/// connection of the server closes. `core` names the place in the log.
///
/// When accepting ends, the listening socket is shut down, so that new
/// connects are refused at once, and the accept in flight is awaited to
/// its end: on io_uring, dropping it would leave the socket open and the
/// descriptor it may return unclosed.
async fn accept_until_stopped(
    listener: &impl Acceptor,
    core: usize,
    gate: &Gate,
    control: &Control,
) {
    let mut stopped = pin!(control.accepting_ends.cancelled());
    // One accept loop of the process (whichever gets here first), for
    // `accept-late-one`.
    static LATE_ONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let late = failpoint("accept-late")
        || (failpoint("accept-late-one")
            && !LATE_ONE.swap(true, std::sync::atomic::Ordering::Relaxed));
    if late {
        // A core that is slow to start: readiness must wait for it.
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(Duration::from_secs(3)) => {}
        }
    }
    let _ = control.accepting.send(());
    let mut backoff = AcceptBackoff::default();
    loop {
        let mut accepting = pin!(listener.accept());
        let accepted = tokio::select! {
            biased;
            () = &mut stopped => {
                listener.halt();
                // Whatever it returns now is closed when dropped.
                drop(accepting.await);
                return;
            }
            accepted = &mut accepting => accepted,
        };
        let pause: Option<Duration> = match accepted {
            Ok((stream, peer)) => {
                backoff.on_success();
                if gate.admit(peer, listener.shard()) {
                    listener.admit(stream, peer);
                }
                None
            }
            Err(e) => gate.accept_failed(core, &mut backoff, &e),
        };
        if let Some(pause) = pause {
            let freed = gate.freed();
            tokio::select! {
                () = &mut stopped => {
                    listener.halt();
                    return;
                }
                () = tokio::time::sleep(pause) => {}
                () = freed => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io;
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::{Acceptor, Control, accept_until_stopped};
    use crate::ops::metrics::{Metrics, Shard};
    use crate::policy::admission::limits::Gate;

    /// A listener whose process has no descriptor to spare until `left`.
    struct OutOfDescriptors<'a> {
        metrics: &'a Metrics,
        peer: SocketAddr,
        left: &'a Cell<bool>,
        admitted: &'a Cell<Option<Duration>>,
        start: tokio::time::Instant,
        stop: &'a CancellationToken,
    }

    impl Acceptor for OutOfDescriptors<'_> {
        type Stream = ();

        async fn accept(&self) -> io::Result<((), SocketAddr)> {
            if self.left.get() {
                Ok(((), self.peer))
            } else {
                Err(io::Error::from_raw_os_error(
                    nix::errno::Errno::EMFILE as i32,
                ))
            }
        }

        fn halt(&self) {}

        fn shard(&self) -> &Shard {
            self.metrics.shard(0)
        }

        fn admit(&self, (): (), _: SocketAddr) {
            self.admitted.set(Some(self.start.elapsed()));
            self.stop.cancel();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_accept_paused_for_want_of_descriptors_resumes_when_a_client_leaves() {
        let metrics = Metrics::new(1);
        let gate = Gate::new(10, 0);
        let peer: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert!(gate.admit(peer, metrics.shard(0)), "a client holds a slot");
        let (alive, _) = mpsc::channel(1);
        let control = Control {
            accepting_ends: CancellationToken::new(),
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            alive,
            exits: mpsc::unbounded_channel().0,
            accepting: mpsc::unbounded_channel().0,
        };
        // The process has no descriptor to spare until a client leaves at 10 s.
        let leaves_at = Duration::from_secs(10);
        let (left, admitted) = (Cell::new(false), Cell::new(None));
        let listener = OutOfDescriptors {
            metrics: &metrics,
            peer,
            left: &left,
            admitted: &admitted,
            start: tokio::time::Instant::now(),
            stop: &control.accepting_ends,
        };
        let accepting = accept_until_stopped(&listener, 0, &gate, &control);
        let leaving = async {
            tokio::time::sleep(leaves_at).await;
            left.set(true);
            gate.release(peer);
        };
        tokio::join!(accepting, leaving);
        let at = admitted.get().expect("accepted once a descriptor was free");
        // The backoff had grown to 500 ms: without the wake-up, the accept
        // would come up to that much later.
        assert!(
            at < leaves_at + Duration::from_millis(1),
            "accepted at {at:?}"
        );
    }
}

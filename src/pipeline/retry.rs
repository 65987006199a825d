//! The retry policy: which errors end the run (bad config, refused start, undecodable stream) and which are
//! worth a reconnect, and how long to wait between attempts.

use std::time::{Duration, Instant};

use crate::capture::replication::ReplicationError;

#[derive(Debug)]
pub enum Failure {
    Fatal(anyhow::Error),
    Retry(anyhow::Error),
}

impl From<ReplicationError> for Failure {
    fn from(e: ReplicationError) -> Self {
        match &e {
            ReplicationError::Auth(_) => Failure::Fatal(e.into()),
            // 28xxx: authentication; 3D000: no such database; 42501: privilege; 42704: no such object (slot).
            // 55000 with "invalidated": the slot lost WAL it needed. No retry can bring it back.
            ReplicationError::Server {
                code,
                message,
                detail,
                ..
            } if code == "55000"
                && (message.contains("invalidated")
                    || detail.as_deref().is_some_and(|d| d.contains("invalidated"))) =>
            {
                let slot = message.split('"').nth(1).unwrap_or("the slot").to_owned();
                Failure::Fatal(
                    anyhow::Error::new(e)
                        .context(crate::capture::provision::lost_slot_message(&slot, None)),
                )
            }
            ReplicationError::Server { code, .. }
                if code.starts_with("28")
                    || code == "3D000"
                    || code == "42501"
                    || code == "42704" =>
            {
                Failure::Fatal(e.into())
            }
            _ => Failure::Retry(e.into()),
        }
    }
}

/// Whether the stream stopped at a change Postgres could not decode because no publication named
/// `publication` existed at its position (dropped, perhaps created again since). Streaming had begun, so
/// the slot exists: a 42704 naming it then is about the publication, whatever the server's language.
pub fn missing_publication(e: &anyhow::Error, publication: &str) -> bool {
    matches!(
        e.downcast_ref::<ReplicationError>(),
        Some(ReplicationError::Server { code, message, .. })
            if code == "42704" && message.contains(&format!("\"{publication}\""))
    )
}

/// Reconnects that end in the same internal Postgres error (SQLSTATE class XX) with nothing received or
/// confirmed past where the last one ended, this many times in a row, stop capture with the fix: Postgres
/// cannot decode past that point, and retrying forever only hides it in the log (QA42 M4). At the default
/// backoff this is about a minute of retries.
pub const STUCK_AFTER: u32 = 8;

/// Counts reconnects that fail the same way at the same place (see [`STUCK_AFTER`]).
#[derive(Debug, Default)]
pub struct Stuck {
    last: Option<(String, u64)>,
    times: u32,
}

impl Stuck {
    /// Notes a failed session that reached `at` (the furthest position received or confirmed). Returns the
    /// reason to stop once the same internal error has ended [`STUCK_AFTER`] sessions in a row at `at`.
    pub fn again(&mut self, e: &anyhow::Error, at: u64, streaming: bool) -> Option<String> {
        let Some(ReplicationError::Server { code, message, .. }) =
            e.downcast_ref::<ReplicationError>()
        else {
            self.last = None;
            self.times = 0;
            return None;
        };
        if !code.starts_with("XX") {
            self.last = None;
            self.times = 0;
            return None;
        }
        let seen = (format!("{code}: {message}"), at);
        if self.last.as_ref() == Some(&seen) {
            self.times += 1;
        } else {
            self.last = Some(seen);
            self.times = 1;
        }
        if self.times < STUCK_AFTER {
            return None;
        }
        let at = crate::capture::Lsn(at);
        let streamed = if streaming {
            "Postgres 15 is known to fail like this decoding a streamed transaction that rolled back a \
             savepoint around a table rewrite: set `postgres.streaming = false` and start again (the \
             transaction is then decoded after its commit, a different path that may get past it). "
        } else {
            ""
        };
        Some(format!(
            "Postgres failed {} times in a row with the same internal error, each time before anything past \
             {at} was received or confirmed: it cannot decode the WAL past that point, and retrying does not \
             help. {streamed}Otherwise see Postgres's server log for the error and its cause. Nothing after \
             {at} is confirmed: the slot keeps the WAL, and no change is lost while capture is stopped",
            self.times
        ))
    }
}

/// Exponential backoff between reconnects, starting over after a session that lasted.
pub struct Backoff {
    next: Duration,
    max: Duration,
}

const FIRST: Duration = Duration::from_millis(250);
/// A session that lived this long was healthy: its failure starts the backoff over.
const HEALTHY: Duration = Duration::from_secs(30);

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Backoff { next: FIRST, max }
    }

    /// How long to wait after a session that started at `started` failed.
    pub fn after(&mut self, started: Instant) -> Duration {
        if started.elapsed() > HEALTHY {
            self.next = FIRST;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

/// Retries of one ClickHouse insert: short, capped waits, since nothing is confirmed meanwhile and the
/// reader keeps the Postgres connection alive.
pub struct InsertBackoff(Duration);

impl Default for InsertBackoff {
    fn default() -> Self {
        InsertBackoff(Duration::from_millis(100))
    }
}

impl InsertBackoff {
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_that_no_retry_can_fix_are_fatal() {
        let server = |code: &str| ReplicationError::Server {
            code: code.into(),
            message: "m".into(),
            detail: None,
            hint: None,
        };
        for code in ["28P01", "28000", "3D000", "42501", "42704"] {
            assert!(
                matches!(Failure::from(server(code)), Failure::Fatal(_)),
                "{code}"
            );
        }
        for code in ["55006", "57P01", "08006"] {
            assert!(
                matches!(Failure::from(server(code)), Failure::Retry(_)),
                "{code}"
            );
        }
        assert!(matches!(
            Failure::from(ReplicationError::Auth("bad".into())),
            Failure::Fatal(_)
        ));
        assert!(matches!(
            Failure::from(ReplicationError::Io(std::io::Error::other("reset"))),
            Failure::Retry(_)
        ));
    }

    /// QA42 M4: the same internal error at the same place, again and again, stops with the fix; an error
    /// of another kind, another message or any progress between them starts the count over.
    #[test]
    fn the_same_internal_error_at_the_same_place_stops_capture() {
        let err = |code: &str, message: &str| {
            anyhow::Error::new(ReplicationError::Server {
                code: code.into(),
                message: message.into(),
                detail: None,
                hint: None,
            })
            .context("streaming")
        };
        let missing = "pg_attribute catalog is missing 1 attribute(s) for relation OID 16384";
        let mut s = Stuck::default();
        for _ in 1..STUCK_AFTER {
            assert_eq!(s.again(&err("XX000", missing), 100, true), None);
        }
        let why = s
            .again(&err("XX000", missing), 100, true)
            .expect("stops on the eighth");
        assert!(why.contains("0/64"), "{why}");
        assert!(why.contains("postgres.streaming = false"), "{why}");
        assert!(Stuck::default()
            .again(&err("XX000", missing), 1, false)
            .is_none());

        // Progress, another message or a transient error in between: the count starts over.
        let mut s = Stuck::default();
        for i in 0..(3 * STUCK_AFTER) {
            let at = 100 + u64::from(i / (STUCK_AFTER - 1));
            assert_eq!(s.again(&err("XX000", missing), at, false), None, "{i}");
        }
        let mut s = Stuck::default();
        for i in 0..(3 * STUCK_AFTER) {
            let e = if i % 5 == 4 {
                anyhow::Error::new(ReplicationError::Io(std::io::Error::other("reset")))
            } else {
                err("XX000", missing)
            };
            assert_eq!(s.again(&e, 100, false), None, "{i}");
        }
        // Not an internal error (a shutdown, a lost connection): never stops capture however often.
        let mut s = Stuck::default();
        for _ in 0..(3 * STUCK_AFTER) {
            assert_eq!(
                s.again(&err("57P01", "terminating connection"), 100, false),
                None
            );
        }
        let mut s = Stuck::default();
        for _ in 1..STUCK_AFTER {
            s.again(&err("XX000", missing), 100, false);
        }
        let why = s.again(&err("XX000", missing), 100, false).expect("stops");
        assert!(!why.contains("postgres.streaming"), "{why}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_starts_over_after_a_healthy_session() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let now = Instant::now();
        let waits: Vec<u128> = (0..5).map(|_| b.after(now).as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 1000, 1000]);
        if let Some(long_ago) = Instant::now().checked_sub(Duration::from_secs(60)) {
            assert_eq!(b.after(long_ago), FIRST);
        }
        let mut i = InsertBackoff::default();
        let waits: Vec<u128> = (0..8).map(|_| i.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }
}

//! The replication connection: startup and authentication in `replication=database` mode, the simple-query
//! commands of the replication protocol, and the CopyBoth stream of XLogData and keepalive frames.
//!
//! Framing and authentication come from `postgres-protocol`; the rest is here because tokio-postgres has no
//! replication mode, and because this loop is what decides when WAL may be released.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::{backend, frontend};
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::capture::pgoutput::PG_EPOCH_OFFSET_US;
use crate::capture::Lsn;
use crate::pg::tls;
use crate::pg::{quote_ident, quote_literal, PgHost, PgParams};
use crate::vocab::SslMode;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("cannot connect to Postgres at {target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("Postgres connection lost: {0}")]
    Io(#[from] io::Error),
    #[error("Postgres error {code}: {message}{}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default(), hint.as_deref().map(|h| format!("; hint: {h}")).unwrap_or_default())]
    Server {
        code: String,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
    },
    #[error("authentication: {0}")]
    Auth(String),
    #[error("unexpected message from Postgres: {0}")]
    Protocol(String),
    #[error("timed out connecting to Postgres after {0:?}")]
    Timeout(Duration),
    #[error("TLS: {0}")]
    Tls(String),
}

impl ReplicationError {
    /// SQLSTATE of a server error, if this is one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ReplicationError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A frame of the CopyBoth stream.
#[derive(Debug)]
pub enum ReplicationFrame {
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        /// When the server sent it (Unix µs, the server's clock).
        send_time_us: i64,
        data: Bytes,
    },
    Keepalive {
        wal_end: Lsn,
        reply_requested: bool,
    },
    /// The server ended the copy (CopyDone).
    End,
}

pub struct ReplicationConnection {
    stream: Box<dyn Stream>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    pub server_version: Option<String>,
}

impl ReplicationConnection {
    pub async fn connect(params: &PgParams) -> Result<Self, ReplicationError> {
        let fut = Self::connect_inner(params);
        match tokio::time::timeout(params.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ReplicationError::Timeout(params.connect_timeout)),
        }
    }

    async fn connect_inner(params: &PgParams) -> Result<Self, ReplicationError> {
        let stream: Box<dyn Stream> = match &params.host {
            PgHost::Tcp(host) => {
                let target = format!("{host}:{}", params.port);
                let s = tokio::net::TcpStream::connect(&target)
                    .await
                    .map_err(|source| ReplicationError::Connect { target, source })?;
                s.set_nodelay(true)?;
                match &params.tls {
                    Some(tls) => Self::negotiate_tls(s, host, params.ssl_mode, tls.clone()).await?,
                    None => Box::new(s),
                }
            }
            PgHost::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", params.port));
                let s = tokio::net::UnixStream::connect(&path)
                    .await
                    .map_err(|source| ReplicationError::Connect {
                        target: path.display().to_string(),
                        source,
                    })?;
                Box::new(s)
            }
        };
        let mut conn = ReplicationConnection {
            stream,
            read_buf: BytesMut::with_capacity(64 * 1024),
            write_buf: BytesMut::with_capacity(1024),
            server_version: None,
        };
        // Output formats that keep values exact and unambiguous: these settings apply to the walsender,
        // whose output functions render every value pgoutput sends.
        let startup = [
            ("user", params.user.as_str()),
            ("database", params.dbname.as_str()),
            ("replication", "database"),
            ("application_name", "waltrail"),
            // Names and values arrive as UTF-8 whatever the database's encoding (a LATIN1 database's
            // non-ASCII column name would otherwise not be valid text here).
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, YMD"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "3"),
            ("bytea_output", "hex"),
            ("IntervalStyle", "iso_8601"),
        ];
        frontend::startup_message(startup.iter().copied(), &mut conn.write_buf)?;
        conn.flush().await?;
        conn.authenticate(params).await?;
        loop {
            match conn.read_message().await? {
                Backend::Msg(backend::Message::ParameterStatus(p)) => {
                    if p.name()? == "server_version" {
                        conn.server_version = Some(p.value()?.to_owned());
                    }
                }
                Backend::Msg(backend::Message::BackendKeyData(_)) => {}
                Backend::Msg(backend::Message::NoticeResponse(_)) => {}
                Backend::Msg(backend::Message::ReadyForQuery(_)) => break,
                Backend::Msg(backend::Message::ErrorResponse(e)) => return Err(server_error(e)),
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "during startup: {}",
                        other.describe()
                    )))
                }
            }
        }
        Ok(conn)
    }

    /// SSLRequest, then a TLS handshake if the server agrees; plaintext only when sslmode allows it.
    async fn negotiate_tls(
        mut s: tokio::net::TcpStream,
        host: &str,
        mode: SslMode,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Box<dyn Stream>, ReplicationError> {
        let mut buf = BytesMut::new();
        frontend::ssl_request(&mut buf);
        s.write_all(&buf).await?;
        let mut answer = [0u8; 1];
        s.read_exact(&mut answer).await?;
        match answer[0] {
            b'S' => {
                let name =
                    tls::server_name(host).map_err(|e| ReplicationError::Tls(format!("{e:#}")))?;
                let stream = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, s)
                    .await
                    .map_err(|e| ReplicationError::Tls(e.to_string()))?;
                Ok(Box::new(stream))
            }
            b'N' if mode == SslMode::Prefer => Ok(Box::new(s)),
            b'N' => Err(ReplicationError::Tls(format!(
                "the server does not accept TLS connections, and postgres.sslmode is {mode:?}"
            ))),
            other => Err(ReplicationError::Protocol(format!(
                "unexpected answer {other:#04x} to SSLRequest"
            ))),
        }
    }

    async fn authenticate(&mut self, params: &PgParams) -> Result<(), ReplicationError> {
        let password = || {
            params.password.as_deref().ok_or_else(|| {
                ReplicationError::Auth(format!(
                    "Postgres asks a password for user {:?}; set it in the connection string or in WALTRAIL_PG_PASSWORD",
                    params.user
                ))
            })
        };
        match self.read_message().await? {
            Backend::Msg(backend::Message::AuthenticationOk) => return Ok(()),
            Backend::Msg(backend::Message::AuthenticationCleartextPassword) => {
                frontend::password_message(password()?.as_bytes(), &mut self.write_buf)?;
                self.flush().await?;
            }
            Backend::Msg(backend::Message::AuthenticationMd5Password(body)) => {
                let hash =
                    postgres_protocol::authentication::md5_hash(params.user.as_bytes(), password()?.as_bytes(), body.salt());
                frontend::password_message(hash.as_bytes(), &mut self.write_buf)?;
                self.flush().await?;
            }
            Backend::Msg(backend::Message::AuthenticationSasl(body)) => {
                let mut mechanisms = body.mechanisms();
                let mut has_scram = false;
                while let Some(m) = mechanisms.next()? {
                    if m == SCRAM_SHA_256 {
                        has_scram = true;
                    }
                }
                if !has_scram {
                    return Err(ReplicationError::Auth(
                        "server offers no SASL mechanism waltrail supports (SCRAM-SHA-256 without channel binding)"
                            .into(),
                    ));
                }
                let mut scram = ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut self.write_buf)?;
                self.flush().await?;
                match self.read_message().await? {
                    Backend::Msg(backend::Message::AuthenticationSaslContinue(body)) => {
                        scram.update(body.data()).map_err(|e| ReplicationError::Auth(e.to_string()))?
                    }
                    Backend::Msg(backend::Message::ErrorResponse(e)) => return Err(server_error(e)),
                    other => {
                        return Err(ReplicationError::Protocol(format!("during SCRAM: {}", other.describe())))
                    }
                }
                frontend::sasl_response(scram.message(), &mut self.write_buf)?;
                self.flush().await?;
                match self.read_message().await? {
                    Backend::Msg(backend::Message::AuthenticationSaslFinal(body)) => scram
                        .finish(body.data())
                        .map_err(|e| ReplicationError::Auth(format!("server signature rejected: {e}")))?,
                    Backend::Msg(backend::Message::ErrorResponse(e)) => return Err(server_error(e)),
                    other => {
                        return Err(ReplicationError::Protocol(format!("during SCRAM: {}", other.describe())))
                    }
                }
            }
            Backend::Msg(backend::Message::ErrorResponse(e)) => return Err(server_error(e)),
            other => {
                return Err(ReplicationError::Auth(format!(
                    "unsupported authentication request: {} (waltrail supports trust, password, md5 and SCRAM-SHA-256)",
                    other.describe()
                )))
            }
        }
        match self.read_message().await? {
            Backend::Msg(backend::Message::AuthenticationOk) => Ok(()),
            Backend::Msg(backend::Message::ErrorResponse(e)) => Err(server_error(e)),
            other => Err(ReplicationError::Protocol(format!(
                "after authentication: {}",
                other.describe()
            ))),
        }
    }

    async fn flush(&mut self) -> Result<(), ReplicationError> {
        self.stream.write_all(&self.write_buf).await?;
        self.stream.flush().await?;
        self.write_buf.clear();
        Ok(())
    }

    /// Read one backend message. Cancel-safe: a partial message stays in the buffer.
    async fn read_message(&mut self) -> Result<Backend, ReplicationError> {
        loop {
            if let Some(m) = self.try_parse()? {
                return Ok(m);
            }
            let n = self.stream.read_buf(&mut self.read_buf).await?;
            if n == 0 {
                return Err(ReplicationError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "Postgres closed the connection",
                )));
            }
        }
    }

    /// The length field of the buffered message's header (tag byte, then a length counting itself).
    fn buffered_len(&self) -> Option<usize> {
        let h = self.read_buf.get(..5)?;
        Some(u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize)
    }

    fn try_parse(&mut self) -> Result<Option<Backend>, ReplicationError> {
        let Some(len) = self.buffered_len() else {
            return Ok(None);
        };
        let tag = self.read_buf[0];
        if len < 4 {
            return Err(ReplicationError::Protocol(format!(
                "invalid message length {len}"
            )));
        }
        if self.read_buf.len() < len + 1 {
            self.read_buf.reserve(len + 1 - self.read_buf.len());
            return Ok(None);
        }
        // postgres-protocol 0.6 does not know CopyBothResponse ('W'): handle it here, the rest there.
        if tag == b'W' {
            self.read_buf.advance(len + 1);
            return Ok(Some(Backend::CopyBothResponse));
        }
        match backend::Message::parse(&mut self.read_buf)? {
            Some(m) => Ok(Some(Backend::Msg(m))),
            None => Ok(None),
        }
    }

    /// Run a replication command or query with the simple-query protocol; returns its rows as text.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ReplicationError> {
        frontend::query(sql, &mut self.write_buf)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.read_message().await? {
                Backend::Msg(backend::Message::RowDescription(_)) => {}
                Backend::Msg(backend::Message::DataRow(row)) => {
                    let buf = row.buffer();
                    let mut out = Vec::new();
                    let mut ranges = row.ranges();
                    while let Some(r) = ranges.next()? {
                        out.push(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(out);
                }
                Backend::Msg(backend::Message::CommandComplete(_))
                | Backend::Msg(backend::Message::EmptyQueryResponse)
                | Backend::Msg(backend::Message::NoticeResponse(_))
                | Backend::Msg(backend::Message::ParameterStatus(_)) => {}
                Backend::Msg(backend::Message::ErrorResponse(e)) => error = Some(server_error(e)),
                Backend::Msg(backend::Message::ReadyForQuery(_)) => break,
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "in reply to {sql:?}: {}",
                        other.describe()
                    )))
                }
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// `IDENTIFY_SYSTEM`: the cluster's system identifier, timeline and current WAL flush position.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, ReplicationError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .first()
            .ok_or_else(|| ReplicationError::Protocol("IDENTIFY_SYSTEM returned no row".into()))?;
        let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok(SystemIdentity {
            system_id: col(0),
            timeline: col(1).parse().unwrap_or(0),
            xlog_pos: col(2)
                .parse()
                .map_err(|e| ReplicationError::Protocol(format!("IDENTIFY_SYSTEM xlogpos: {e}")))?,
            dbname: row.get(3).cloned().flatten(),
        })
    }

    /// The server's major version (15 for "15.18 (Debian 15.18-0+deb12u1)"), when it said.
    pub fn server_major(&self) -> Option<u32> {
        major_version(self.server_version.as_deref()?)
    }

    /// Enter CopyBoth mode, streaming the slot from `start` (the server skips what the slot confirmed already).
    /// With `streaming` (protocol 2, Postgres 14+), large transactions come while still in progress.
    pub async fn start_replication(
        &mut self,
        slot: &str,
        start: Lsn,
        publication: &str,
        messages: bool,
        streaming: bool,
    ) -> Result<(), ReplicationError> {
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '{}', publication_names {}, messages '{}'{})",
            quote_ident(slot),
            start,
            if streaming { 2 } else { 1 },
            quote_literal(&quote_ident(publication)),
            if messages { "true" } else { "false" },
            if streaming { ", streaming 'on'" } else { "" }
        );
        frontend::query(&sql, &mut self.write_buf)?;
        self.flush().await?;
        loop {
            match self.read_message().await? {
                Backend::CopyBothResponse => return Ok(()),
                Backend::Msg(backend::Message::NoticeResponse(_))
                | Backend::Msg(backend::Message::ParameterStatus(_)) => {}
                Backend::Msg(backend::Message::ErrorResponse(e)) => {
                    let err = server_error(e);
                    // Drain to ReadyForQuery so the error is the server's, not a broken stream.
                    let _ = self.read_until_ready().await;
                    return Err(err);
                }
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "in reply to START_REPLICATION: {}",
                        other.describe()
                    )))
                }
            }
        }
    }

    async fn read_until_ready(&mut self) -> Result<(), ReplicationError> {
        loop {
            if let Backend::Msg(backend::Message::ReadyForQuery(_)) = self.read_message().await? {
                return Ok(());
            }
        }
    }

    /// Next frame of the CopyBoth stream. Cancel-safe, so it can sit in a `select!` beside a timer.
    pub async fn next_frame(&mut self) -> Result<ReplicationFrame, ReplicationError> {
        loop {
            match self.read_message().await? {
                Backend::Msg(backend::Message::CopyData(body)) => {
                    let mut data = body.into_bytes();
                    return parse_copy_frame(&mut data);
                }
                Backend::Msg(backend::Message::CopyDone) => return Ok(ReplicationFrame::End),
                Backend::Msg(backend::Message::NoticeResponse(_))
                | Backend::Msg(backend::Message::ParameterStatus(_)) => {}
                Backend::Msg(backend::Message::ErrorResponse(e)) => return Err(server_error(e)),
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "in the replication stream: {}",
                        other.describe()
                    )))
                }
            }
        }
    }

    /// Whether a whole message is already buffered, so `next_frame` returns without reading the socket. The
    /// reader hands decoded changes over in groups while this holds, and at once when it does not.
    pub fn frame_ready(&self) -> bool {
        self.buffered_len()
            .is_some_and(|len| self.read_buf.len() > len)
    }

    /// Standby status update: tells the server what is written, flushed (safe to release) and applied.
    pub async fn send_status(
        &mut self,
        written: Lsn,
        flushed: Lsn,
        reply: bool,
    ) -> Result<(), ReplicationError> {
        let mut payload = BytesMut::with_capacity(34);
        payload.put_u8(b'r');
        payload.put_u64(written.0);
        payload.put_u64(flushed.0);
        payload.put_u64(flushed.0);
        payload.put_i64(now_pg_us());
        payload.put_u8(u8::from(reply));
        frontend::CopyData::new(&payload[..])?.write(&mut self.write_buf);
        self.flush().await
    }

    /// Leave copy mode and close the connection politely: wait (briefly) for the server to end its side, so
    /// the slot is free again when this returns and a restart can take it at once.
    pub async fn close(mut self) -> Result<(), ReplicationError> {
        frontend::copy_done(&mut self.write_buf);
        self.flush().await?;
        let drain = async {
            loop {
                match self.read_message().await? {
                    Backend::Msg(backend::Message::ReadyForQuery(_)) => {
                        return Ok::<_, ReplicationError>(())
                    }
                    Backend::Msg(backend::Message::ErrorResponse(e)) => {
                        return Err(server_error(e))
                    }
                    _ => {}
                }
            }
        };
        let drained = tokio::time::timeout(Duration::from_secs(5), drain).await;
        frontend::terminate(&mut self.write_buf);
        let _ = self.flush().await;
        match drained {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }
}

fn parse_copy_frame(data: &mut Bytes) -> Result<ReplicationFrame, ReplicationError> {
    let short = || ReplicationError::Protocol("truncated replication frame".into());
    if data.is_empty() {
        return Err(short());
    }
    match data.get_u8() {
        b'w' => {
            if data.len() < 24 {
                return Err(short());
            }
            let wal_start = Lsn(data.get_u64());
            let wal_end = Lsn(data.get_u64());
            let send_time_us = data.get_i64().saturating_add(PG_EPOCH_OFFSET_US);
            Ok(ReplicationFrame::XLogData {
                wal_start,
                wal_end,
                send_time_us,
                data: std::mem::take(data),
            })
        }
        b'k' => {
            if data.len() < 17 {
                return Err(short());
            }
            let wal_end = Lsn(data.get_u64());
            let _send_time = data.get_i64();
            Ok(ReplicationFrame::Keepalive {
                wal_end,
                reply_requested: data.get_u8() == 1,
            })
        }
        other => Err(ReplicationError::Protocol(format!(
            "unknown replication frame {:?}",
            other as char
        ))),
    }
}

fn now_pg_us() -> i64 {
    let unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    unix_us - PG_EPOCH_OFFSET_US
}

#[derive(Debug, Clone)]
pub struct SystemIdentity {
    pub system_id: String,
    pub timeline: u32,
    pub xlog_pos: Lsn,
    pub dbname: Option<String>,
}

enum Backend {
    CopyBothResponse,
    Msg(backend::Message),
}

impl Backend {
    fn describe(&self) -> String {
        match self {
            Backend::CopyBothResponse => "CopyBothResponse".into(),
            Backend::Msg(m) => match m {
                backend::Message::ErrorResponse(_) => "ErrorResponse".into(),
                backend::Message::AuthenticationKerberosV5 => "Kerberos authentication".into(),
                backend::Message::AuthenticationGss => "GSSAPI authentication".into(),
                backend::Message::AuthenticationSspi => "SSPI authentication".into(),
                backend::Message::AuthenticationScmCredential => {
                    "SCM credential authentication".into()
                }
                backend::Message::CopyInResponse(_) => "CopyInResponse".into(),
                backend::Message::CopyOutResponse(_) => "CopyOutResponse".into(),
                backend::Message::CopyData(_) => "CopyData".into(),
                backend::Message::DataRow(_) => "DataRow".into(),
                backend::Message::RowDescription(_) => "RowDescription".into(),
                backend::Message::ReadyForQuery(_) => "ReadyForQuery".into(),
                // What a walsender sends after ending the stream on its side: the server is shutting
                // down or restarting (waltrail reconnects).
                backend::Message::CommandComplete(_) => {
                    "CommandComplete: the server ended the stream (shutting down or restarting?)"
                        .into()
                }
                backend::Message::EmptyQueryResponse => "EmptyQueryResponse".into(),
                backend::Message::BackendKeyData(_) => "BackendKeyData".into(),
                backend::Message::NotificationResponse(_) => "NotificationResponse".into(),
                backend::Message::ParseComplete => "ParseComplete".into(),
                backend::Message::BindComplete => "BindComplete".into(),
                backend::Message::CloseComplete => "CloseComplete".into(),
                backend::Message::NoData => "NoData".into(),
                backend::Message::PortalSuspended => "PortalSuspended".into(),
                backend::Message::ParameterDescription(_) => "ParameterDescription".into(),
                _ => "an unexpected message".into(),
            },
        }
    }
}

fn server_error(body: backend::ErrorResponseBody) -> ReplicationError {
    let mut code = String::new();
    let mut message = String::new();
    let mut detail = None;
    let mut hint = None;
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = Some(value),
            b'H' => hint = Some(value),
            _ => {}
        }
    }
    // What the server does not say: the fix for the refusals an operator meets most.
    if hint.is_none() && code == "42501" && message.contains("replication") {
        hint = Some(
            "give waltrail's role the REPLICATION attribute (ALTER ROLE <user> REPLICATION) or use a role that has it"
                .to_owned(),
        );
    }
    ReplicationError::Server {
        code,
        message,
        detail,
        hint,
    }
}

/// The major version in a `server_version` text: its leading number ("15.18 (Debian …)" → 15, "9.6.24" → 9).
fn major_version(v: &str) -> Option<u32> {
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_frames_reject_truncation() {
        let mut short = Bytes::from_static(b"w\0\0");
        assert!(parse_copy_frame(&mut short).is_err());
        let mut empty = Bytes::new();
        assert!(parse_copy_frame(&mut empty).is_err());
        let mut unknown = Bytes::from_static(b"z1234");
        assert!(parse_copy_frame(&mut unknown).is_err());
    }

    #[test]
    fn keepalive_frame() {
        let mut b = BytesMut::new();
        b.put_u8(b'k');
        b.put_u64(0x1_0000_0010);
        b.put_i64(0);
        b.put_u8(1);
        match parse_copy_frame(&mut b.freeze()).unwrap() {
            ReplicationFrame::Keepalive {
                wal_end,
                reply_requested,
            } => {
                assert_eq!(wal_end, Lsn(0x1_0000_0010));
                assert!(reply_requested);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn major_versions() {
        assert_eq!(major_version("15.18 (Debian 15.18-0+deb12u1)"), Some(15));
        assert_eq!(major_version("14beta1"), Some(14));
        assert_eq!(major_version("9.6.24"), Some(9));
        assert_eq!(major_version(""), None);
        assert_eq!(major_version("devel"), None);
        assert_eq!(major_version("99999999999999999999"), None);
    }
}

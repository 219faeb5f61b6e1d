//! A new connection from its first byte to `ReadyForQuery`: TLS (after an
//! `SSLRequest` or direct), GSS requests (declined), cancel requests, protocol
//! version negotiation, the connection limit, authentication, the database
//! (by name or by the TLS host name), and the parameters and cancel key every
//! client gets.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info};

use crate::activity::{ClientInfo, Metered};
use crate::admin::{self, ConsoleContext};
use crate::cancel::CancelOutcome;
use crate::database::Database;
use crate::gateway::Gateway;
use crate::protocol::backend;
use crate::protocol::error::{PgError, sqlstate};
use crate::protocol::startup::{self, NEWEST_MINOR, StartupMessage, StartupPacket};
use crate::session::settings::{self, Settings};

use super::auth::authenticate;
use super::client::{self, ClientContext};
use super::tls::{ALPN, ClientTls, Connection, sni_database};
use super::transport::{ClientError, ClientStream, send_error};

/// Where a connection comes from.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    /// A TCP client at `addr`, which reached the gateway at `local`.
    Tcp {
        addr: SocketAddr,
        local: Option<SocketAddr>,
    },
    Unix,
}

impl Peer {
    /// TLS is possible on the connection.
    fn is_tcp(&self) -> bool {
        matches!(self, Peer::Tcp { .. })
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp { addr, .. } => write!(f, "{addr}"),
            Peer::Unix => write!(f, "unix socket"),
        }
    }
}

/// What a login leads to.
enum LoggedIn {
    Client(ClientContext, BytesMut),
    Console(ConsoleContext, BytesMut),
}

/// Serves one accepted TCP connection until it closes; one that starts with a
/// TLS handshake (PostgreSQL 17's `sslnegotiation=direct`) gets TLS first.
pub async fn serve_tcp(stream: TcpStream, addr: SocketAddr, gateway: Arc<Gateway>) {
    let peer = Peer::Tcp {
        addr,
        local: stream.local_addr().ok(),
    };
    let mut connection = Connection::Plain(stream);
    if let Some(acceptor) = &gateway.tls() {
        let direct = async {
            let Connection::Plain(plain) = &connection else {
                return Ok(false);
            };
            let mut first = [0u8; 1];
            let read = plain.peek(&mut first).await?;
            if read == 0 || first[0] != TLS_HANDSHAKE {
                return Ok(false);
            }
            connection.upgrade(acceptor).await?;
            Ok::<_, io::Error>(true)
        };
        let limit = gateway
            .config()
            .client_login_timeout
            .unwrap_or(Duration::MAX);
        match tokio::time::timeout(limit, direct).await {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) if connection.alpn() == Some(ALPN) => {}
            Ok(Ok(true)) => {
                // As PostgreSQL: direct TLS must name the protocol.
                info!(%peer, "connection refused: direct TLS without ALPN \"postgresql\"");
                return;
            }
            Ok(Err(err)) => {
                info!(%peer, "TLS handshake failed: {err}");
                return;
            }
            Err(_) => {
                debug!(%peer, "connection closed: nothing arrived before client_login_timeout");
                return;
            }
        }
    }
    serve_connection(connection, peer, gateway).await
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Serves one accepted connection until it closes.
pub async fn serve_connection<S: ClientStream>(
    mut stream: Connection<S>,
    peer: Peer,
    gateway: Arc<Gateway>,
) {
    let login = login(&mut stream, &gateway, peer);
    let login = match gateway.config().client_login_timeout {
        Some(limit) => match tokio::time::timeout(limit, login).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Protocol(PgError::protocol_violation(
                "terminating connection: client_login_timeout expired before login completed",
            ))),
        },
        None => login.await,
    };
    match login {
        Ok(Some(LoggedIn::Client(context, buf))) => {
            info!(client = context.key.process_id, %peer, user = %context.user, database = %context.database.name, "client logged in");
            let process_id = context.key.process_id;
            let mut stream = Metered::new(&mut stream, context.activity.handle());
            client::serve(&mut stream, buf, context).await;
            gateway.cancels.unregister(process_id);
            info!(client = process_id, %peer, "client left");
        }
        Ok(Some(LoggedIn::Console(context, buf))) => {
            info!(client = context.key.process_id, %peer, user = %context.user, "admin console opened");
            let process_id = context.key.process_id;
            let mut stream = Metered::new(&mut stream, context.activity.handle());
            admin::serve(&mut stream, buf, context).await;
            gateway.cancels.unregister(process_id);
            info!(client = process_id, %peer, "admin console closed");
        }
        Ok(None) => {}
        Err(ClientError::Protocol(err)) => {
            info!(%peer, "connection refused: {err}");
            let _ = send_error(&mut stream, &err).await;
        }
        Err(ClientError::Io(err)) => debug!(%peer, "connection closed during login: {err}"),
    }
}

/// Returns the logged-in client, or `None` for a connection that only carried
/// a cancel request.
async fn login<S: ClientStream>(
    stream: &mut Connection<S>,
    gateway: &Arc<Gateway>,
    peer: Peer,
) -> Result<Option<LoggedIn>, ClientError> {
    let tcp = peer.is_tcp();
    let config = gateway.config();
    let mut ssl_done = false;
    let mut gss_done = false;
    let message = loop {
        match read_startup_packet(stream).await? {
            StartupPacket::SslRequest if !ssl_done && !stream.is_tls() => {
                ssl_done = true;
                match (&gateway.tls(), tcp) {
                    (Some(acceptor), true) => {
                        stream.write_all(b"S").await?;
                        stream.flush().await?;
                        stream.upgrade(acceptor).await?;
                    }
                    _ => {
                        stream.write_all(b"N").await?;
                        stream.flush().await?;
                    }
                }
            }
            StartupPacket::GssEncRequest if !gss_done => {
                gss_done = true;
                stream.write_all(b"N").await?;
                stream.flush().await?;
            }
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                // PostgreSQL reads a repeated request as a startup packet with
                // a nonsense protocol version, and refuses it.
                return Err(PgError::fatal(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.0",
                )
                .into());
            }
            StartupPacket::Cancel {
                process_id,
                secret_key,
            } => {
                let outcome = gateway.cancels.cancel(process_id, secret_key);
                match outcome {
                    CancelOutcome::RemovedFromQueue => {
                        info!(client = process_id, "cancel request: queued work removed")
                    }
                    CancelOutcome::ForwardedToServer => {
                        info!(
                            client = process_id,
                            "cancel request forwarded to the server"
                        )
                    }
                    CancelOutcome::NotWaiting => info!(
                        client = process_id,
                        "cancel request: the client was not waiting for the engine, and what it runs cannot be interrupted (the embedded engine, or a statement pipelined on a server session)"
                    ),
                    CancelOutcome::UnknownKey => {
                        debug!(
                            client = process_id,
                            "cancel request with an unknown key ignored"
                        )
                    }
                }
                return Ok(None);
            }
            StartupPacket::Startup(message) => break message,
        }
    };

    if tcp && !stream.is_tls() && config.client_tls == ClientTls::Required {
        return Err(PgError::fatal(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            format!(
                "no encryption: pgshare accepts TCP connections for user \"{}\", database \"{}\" only with TLS",
                message.user(),
                message.database()
            ),
        )
        .with_hint("connect with sslmode=require (or verify-full)")
        .into());
    }
    // The TLS host name picks the database when it names one under the SNI
    // domain, whatever the startup packet says.
    let database_name = sni_database(stream.server_name(), config.sni_domain.as_deref())
        .unwrap_or(message.database())
        .to_string();

    let Ok(permit) = gateway.connections.clone().try_acquire_owned() else {
        return Err(PgError::fatal(
            sqlstate::TOO_MANY_CONNECTIONS,
            "sorry, too many clients already",
        )
        .with_hint(format!(
            "the gateway allows {} clients at once (max_client_conn)",
            config.max_client_conn
        ))
        .into());
    };

    if message.minor_version > NEWEST_MINOR || !message.protocol_options.is_empty() {
        let mut out = Vec::new();
        backend::negotiate_protocol_version(
            &mut out,
            (3 << 16) | i32::from(NEWEST_MINOR),
            &message.protocol_options,
        );
        stream.write_all(&out).await?;
    }

    let mut buf = BytesMut::with_capacity(8192);
    authenticate(stream, &mut buf, &config, message.user()).await?;
    let tls = stream.tls_description();
    let info = |id: i32| {
        let (addr, local) = match peer {
            Peer::Tcp { addr, local } => (Some(addr), local),
            Peer::Unix => (None, None),
        };
        ClientInfo {
            id,
            user: message.user().to_string(),
            database: database_name.clone(),
            peer: addr,
            local,
            tls: tls.clone(),
            application_name: message
                .params
                .iter()
                .find(|(name, _)| name == "application_name")
                .map(|(_, value)| value.clone())
                .unwrap_or_default(),
        }
    };

    if database_name == admin::DATABASE {
        admin::check_access(&config.admin_users, message.user())?;
        let (key, cancel) = gateway.cancels.register();
        let (activity, shutdown) = gateway.activity.register(
            info(key.process_id),
            gateway.activity.console_database(),
            &gateway.shutdown,
        );
        stream
            .write_all(&admin::welcome(key.process_id, key.secret_key))
            .await?;
        stream.flush().await?;
        return Ok(Some(LoggedIn::Console(
            ConsoleContext {
                key,
                cancel,
                user: message.user().to_string(),
                activity,
                shutdown,
                gateway: gateway.clone(),
                _permit: permit,
            },
            buf,
        )));
    }

    let connected = gateway.registry.connect(&database_name).await?;
    let database = connected.database().clone();
    let (settings, settings_checked, parameters) = startup_settings(&database, &message).await?;
    let (key, cancel) = gateway.cancels.register();
    let (activity, shutdown) = gateway.activity.register(
        info(key.process_id),
        gateway
            .activity
            .database(&database.name, !database.scheduler.pipelines()),
        &gateway.shutdown,
    );
    stream
        .write_all(&welcome(&parameters, key.process_id, key.secret_key))
        .await?;
    stream.flush().await?;
    Ok(Some(LoggedIn::Client(
        ClientContext {
            key,
            cancel,
            user: message.user().to_string(),
            database,
            connected,
            registry: gateway.registry.clone(),
            shutdown,
            activity,
            config,
            settings,
            settings_checked,
            _permit: permit,
        },
        buf,
    )))
}

/// How long a login waits for the engine to check the client's startup
/// parameters; a busy engine (another client inside a transaction) must not
/// keep a client from connecting.
const STARTUP_CHECK_WAIT: Duration = Duration::from_millis(100);

/// The client's settings from its startup parameters, and the parameters to
/// report to it. When the engine is free they are applied once now, so that a
/// bad value is refused at login as PostgreSQL refuses it, and reported with
/// the values the engine normalised them to. Otherwise they are reported as
/// sent and checked when the client first runs something.
async fn startup_settings(
    database: &Database,
    message: &StartupMessage,
) -> Result<(Arc<Settings>, bool, Vec<(String, String)>), ClientError> {
    let requested = Arc::new(Settings::from_startup(&message.params));
    let mut parameters = database.parameters.clone();
    if requested.is_empty() {
        return Ok((requested, true, parameters));
    }
    let (settings, checked) =
        match tokio::time::timeout(STARTUP_CHECK_WAIT, database.scheduler.lease()).await {
            Ok(mut lease) => {
                let Some(engine) = lease.session.as_mut() else {
                    return Err(PgError::fatal(
                        sqlstate::CONNECTION_FAILURE,
                        "the database engine is not available",
                    )
                    .into());
                };
                settings::switch(engine, &requested).await??;
                (settings::capture(engine).await?, true)
            }
            Err(_) => (requested, false),
        };
    for (name, value) in &mut parameters {
        if let Some(value_for_client) = settings.get(name) {
            *value = value_for_client.to_string();
        }
    }
    Ok((settings, checked, parameters))
}

async fn read_startup_packet<S: ClientStream>(
    stream: &mut S,
) -> Result<StartupPacket, ClientError> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await?;
    let len = startup::packet_len(header)?;
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await?;
    Ok(startup::parse(&body)?)
}

/// Everything after authentication up to the first `ReadyForQuery`.
fn welcome(parameters: &[(String, String)], process_id: i32, secret_key: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    backend::authentication_ok(&mut out);
    for (name, value) in parameters {
        backend::parameter_status(&mut out, name, value);
    }
    backend::backend_key_data(&mut out, process_id, secret_key);
    backend::ready_for_query(&mut out, b'I');
    out
}

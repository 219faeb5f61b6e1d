//! The login handshake and every refusal a client can get before (or instead
//! of) a working session: password methods, unknown roles and databases, the
//! connection limit, the special startup requests, protocol negotiation and
//! the protocol violations that end a connection. Real clients (tokio-postgres,
//! psql) show that what works for users keeps working; raw sockets check the
//! exact bytes the gateway writes and that it closes the connection when it
//! should, without waiting for data that will never come.

mod support;

use std::io;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pgshare::config::AuthMethod;
use support::{Gateway, sqlstate, test_config, with_password};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_postgres::Client;

/// How long a raw-socket test waits for any answer before failing.
const WAIT: Duration = Duration::from_secs(5);

const PROTOCOL_2_0: i32 = 2 << 16;
const PROTOCOL_3_0: i32 = 3 << 16;
const PROTOCOL_3_2: i32 = (3 << 16) | 2;
const CANCEL_REQUEST: i32 = 80877102;
const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;

const PASSWORD: &str = "s3cret";

fn password_config(auth: AuthMethod) -> pgshare::config::Config {
    with_password(test_config(), auth, "postgres", PASSWORD)
}

async fn connect_with_password(
    gateway: &Gateway,
    user: &str,
    password: &str,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = gateway.config_for(user, "postgres");
    config.password(password);
    gateway.try_connect(config).await
}

async fn select_one(client: &Client) -> i32 {
    client.query_one("SELECT 1", &[]).await.unwrap().get(0)
}

/// Runs `psql -c 'SELECT 1'` against the gateway with `password` in `PGPASSWORD`.
async fn psql_select_one(gateway: &Gateway, password: &str) -> Output {
    let url = gateway.url();
    let password = password.to_string();
    tokio::task::spawn_blocking(move || {
        Command::new("psql")
            .args([&url, "-X", "-A", "-t", "-w", "-c", "SELECT 1"])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .expect("psql must be installed (it is in the README's requirements)")
    })
    .await
    .unwrap()
}

/// An untagged startup-phase packet: length word, then `body`.
fn untagged(body: &[u8]) -> Vec<u8> {
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(body);
    packet
}

/// SSLRequest, GSSENCRequest or CancelRequest: a code and its int32 arguments.
fn request(code: i32, args: &[i32]) -> Vec<u8> {
    let body: Vec<u8> = [code]
        .iter()
        .chain(args)
        .flat_map(|word| word.to_be_bytes())
        .collect();
    untagged(&body)
}

fn startup(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (name, value) in params {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    untagged(&body)
}

const LOGIN: &[(&str, &str)] = &[("user", "postgres"), ("database", "postgres")];

async fn raw_connect(gateway: &Gateway) -> TcpStream {
    TcpStream::connect(gateway.addr).await.unwrap()
}

/// Reads one backend message as (tag, body).
async fn read_message(socket: &mut TcpStream) -> (u8, Vec<u8>) {
    let read = async {
        let mut header = [0u8; 5];
        socket.read_exact(&mut header).await?;
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        assert!(
            (4..1 << 20).contains(&len),
            "implausible length {len} for backend message {:?}",
            header[0] as char
        );
        let mut body = vec![0u8; len as usize - 4];
        socket.read_exact(&mut body).await?;
        Ok::<_, io::Error>((header[0], body))
    };
    timeout(WAIT, read)
        .await
        .expect("the gateway answers within 5 s")
        .expect("a whole backend message")
}

/// Reads messages up to and including `ReadyForQuery`.
async fn read_until_ready(socket: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut messages = Vec::new();
    loop {
        let (tag, body) = read_message(socket).await;
        assert_ne!(
            tag,
            b'E',
            "login failed: {}",
            String::from_utf8_lossy(&body)
        );
        messages.push((tag, body));
        if tag == b'Z' {
            return messages;
        }
    }
}

/// A field of an `ErrorResponse` body, such as `b'C'` (SQLSTATE) or `b'S'`.
fn error_field(body: &[u8], field: u8) -> Option<String> {
    body.split(|&b| b == 0)
        .take_while(|entry| !entry.is_empty())
        .find(|entry| entry[0] == field)
        .map(|entry| String::from_utf8_lossy(&entry[1..]).into_owned())
}

/// Reads an `ErrorResponse` and returns its body.
async fn read_error(socket: &mut TcpStream) -> Vec<u8> {
    let (tag, body) = read_message(socket).await;
    assert_eq!(
        tag as char,
        'E',
        "expected an ErrorResponse, got {:?}",
        String::from_utf8_lossy(&body)
    );
    body
}

/// Asserts that the gateway closes the connection without sending anything more.
async fn assert_closed(socket: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = timeout(WAIT, socket.read_to_end(&mut rest))
        .await
        .expect("the gateway closes the connection within 5 s");
    match read {
        Ok(_) => assert!(rest.is_empty(), "unexpected bytes before EOF: {rest:?}"),
        Err(err) => assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}"),
    }
}

/// A raw connection logged in as `postgres` (trust), past its `ReadyForQuery`.
async fn logged_in(gateway: &Gateway) -> (TcpStream, Vec<(u8, Vec<u8>)>) {
    let mut socket = raw_connect(gateway).await;
    socket
        .write_all(&startup(PROTOCOL_3_0, LOGIN))
        .await
        .unwrap();
    let welcome = read_until_ready(&mut socket).await;
    (socket, welcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_accepts_the_right_password_and_refuses_wrong_ones_and_unknown_roles_alike() {
    let gateway = Gateway::start_with(password_config(AuthMethod::ScramSha256)).await;
    let client = connect_with_password(&gateway, "postgres", PASSWORD)
        .await
        .unwrap();
    assert_eq!(select_one(&client).await, 1);
    let wrong = connect_with_password(&gateway, "postgres", "wrong")
        .await
        .expect_err("a wrong password is refused");
    assert_eq!(sqlstate(&wrong), "28P01");
    // As in PostgreSQL, password authentication does not reveal which roles exist.
    let unknown = connect_with_password(&gateway, "nobody", PASSWORD)
        .await
        .expect_err("an unknown role is refused");
    assert_eq!(sqlstate(&unknown), "28P01");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_from_a_users_file_log_in_with_plain_and_scram_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("userlist.txt");
    // A stored secret as PostgreSQL keeps it in pg_authid.rolpassword.
    let secret =
        pgshare::frontend::scram::ScramSecret::from_password("bob-pw", b"0123456789abcdef", 4096);
    std::fs::write(
        &path,
        format!("# roles\n\"alice\" \"alice-pw\"\n\"bob\" \"{secret}\"\n"),
    )
    .unwrap();
    let mut config = test_config();
    config.auth = AuthMethod::ScramSha256;
    config.users = pgshare::config::read_users_file(&path)
        .unwrap()
        .into_iter()
        .map(|(name, secret)| (name, Some(secret)))
        .collect();
    let gateway = Gateway::start_with(config).await;
    let alice = connect_with_password(&gateway, "alice", "alice-pw")
        .await
        .unwrap();
    assert_eq!(select_one(&alice).await, 1);
    let bob = connect_with_password(&gateway, "bob", "bob-pw")
        .await
        .unwrap();
    assert_eq!(select_one(&bob).await, 1);
    let err = connect_with_password(&gateway, "bob", "alice-pw")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "28P01");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_accepts_the_right_password_and_refuses_a_wrong_one() {
    let gateway = Gateway::start_with(password_config(AuthMethod::Md5)).await;
    let client = connect_with_password(&gateway, "postgres", PASSWORD)
        .await
        .unwrap();
    assert_eq!(select_one(&client).await, 1);
    let wrong = connect_with_password(&gateway, "postgres", "wrong")
        .await
        .expect_err("a wrong password is refused");
    assert_eq!(sqlstate(&wrong), "28P01");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_logs_in_with_scram_and_reports_a_wrong_password() {
    let gateway = Gateway::start_with(password_config(AuthMethod::ScramSha256)).await;
    let good = psql_select_one(&gateway, PASSWORD).await;
    assert!(
        good.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&good.stdout).trim(), "1");
    let bad = psql_select_one(&gateway, "wrong").await;
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success(),
        "psql logged in with a wrong password"
    );
    assert!(
        stderr.contains("password authentication failed"),
        "psql said: {stderr}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_refuses_unknown_roles_and_databases() {
    let mut config = test_config();
    config.auto_create = false;
    let gateway = Gateway::start_with(config).await;
    let role = gateway
        .try_connect(gateway.config_for("nobody", "postgres"))
        .await
        .expect_err("an unknown role is refused");
    assert_eq!(sqlstate(&role), "28000");
    let database = gateway
        .try_connect(gateway.config_for("postgres", "nope"))
        .await
        .expect_err("an unknown database is refused");
    assert_eq!(sqlstate(&database), "3D000");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_the_extra_client_until_one_leaves() {
    let mut config = test_config();
    config.max_client_conn = 2;
    let gateway = Gateway::start_with(config).await;
    let first = gateway.connect().await;
    let second = gateway.connect().await;
    let third = gateway
        .try_connect(gateway.config_for("postgres", "postgres"))
        .await
        .expect_err("a third client is over the limit");
    assert_eq!(sqlstate(&third), "53300");

    drop(first);
    let deadline = Instant::now() + WAIT;
    let newcomer = loop {
        match gateway
            .try_connect(gateway.config_for("postgres", "postgres"))
            .await
        {
            Ok(client) => break client,
            Err(err) => {
                assert_eq!(sqlstate(&err), "53300");
                assert!(
                    Instant::now() < deadline,
                    "the slot of a client that left was not freed within 5 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(select_one(&newcomer).await, 1);
    assert_eq!(select_one(&second).await, 1);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_request_is_declined_and_the_login_continues_on_the_same_socket() {
    let gateway = Gateway::start().await;
    let mut socket = raw_connect(&gateway).await;
    socket.write_all(&request(SSL_REQUEST, &[])).await.unwrap();
    let mut answer = [0u8; 1];
    timeout(WAIT, socket.read_exact(&mut answer))
        .await
        .expect("an answer to SSLRequest within 5 s")
        .unwrap();
    assert_eq!(&answer, b"N");

    socket
        .write_all(&startup(PROTOCOL_3_0, LOGIN))
        .await
        .unwrap();
    let welcome = read_until_ready(&mut socket).await;
    assert_eq!(
        welcome[0],
        (b'R', 0i32.to_be_bytes().to_vec()),
        "AuthenticationOk first"
    );
    let tags: Vec<u8> = welcome.iter().map(|(tag, _)| *tag).collect();
    let key = tags.iter().position(|&tag| tag == b'K');
    assert!(
        key.is_some_and(|key| key < tags.len() - 1),
        "BackendKeyData before ReadyForQuery: {:?}",
        String::from_utf8_lossy(&tags)
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_request_is_declined() {
    let gateway = Gateway::start().await;
    let mut socket = raw_connect(&gateway).await;
    socket
        .write_all(&request(GSSENC_REQUEST, &[]))
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    timeout(WAIT, socket.read_exact(&mut answer))
        .await
        .expect("an answer to GSSENCRequest within 5 s")
        .unwrap();
    assert_eq!(&answer, b"N");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ssl_request_is_refused_as_postgres_does() {
    let gateway = Gateway::start().await;
    let mut socket = raw_connect(&gateway).await;
    socket.write_all(&request(SSL_REQUEST, &[])).await.unwrap();
    let mut answer = [0u8; 1];
    timeout(WAIT, socket.read_exact(&mut answer))
        .await
        .expect("an answer to SSLRequest within 5 s")
        .unwrap();
    assert_eq!(&answer, b"N");
    socket.write_all(&request(SSL_REQUEST, &[])).await.unwrap();
    let body = read_error(&mut socket).await;
    assert_eq!(error_field(&body, b'C').as_deref(), Some("0A000"));
    assert_closed(&mut socket).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_2_with_an_option_is_negotiated_down_to_3_0() {
    let gateway = Gateway::start().await;
    let mut socket = raw_connect(&gateway).await;
    let mut params = LOGIN.to_vec();
    params.push(("_pq_.some_option", "1"));
    socket
        .write_all(&startup(PROTOCOL_3_2, &params))
        .await
        .unwrap();

    let mut expected = PROTOCOL_3_0.to_be_bytes().to_vec();
    expected.extend_from_slice(&1i32.to_be_bytes());
    expected.extend_from_slice(b"_pq_.some_option\0");
    assert_eq!(read_message(&mut socket).await, (b'v', expected));
    assert_eq!(
        read_message(&mut socket).await,
        (b'R', 0i32.to_be_bytes().to_vec()),
        "AuthenticationOk"
    );
    let rest = read_until_ready(&mut socket).await;
    assert_eq!(rest.last().unwrap().0, b'Z');
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_2_0_is_refused_with_feature_not_supported() {
    let gateway = Gateway::start().await;
    let mut socket = raw_connect(&gateway).await;
    socket
        .write_all(&startup(PROTOCOL_2_0, LOGIN))
        .await
        .unwrap();
    let error = read_error(&mut socket).await;
    assert_eq!(error_field(&error, b'C').as_deref(), Some("0A000"));
    assert_closed(&mut socket).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_startup_packet_is_a_protocol_violation() {
    let gateway = Gateway::start().await;
    let mut socket = raw_connect(&gateway).await;
    // Only the length word: the gateway must refuse it without waiting for the rest.
    socket.write_all(&1_000_000i32.to_be_bytes()).await.unwrap();
    let error = read_error(&mut socket).await;
    assert_eq!(error_field(&error, b'C').as_deref(), Some("08P01"));
    assert_closed(&mut socket).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_message_type_ends_only_that_connection() {
    let gateway = Gateway::start().await;
    let bystander = gateway.connect().await;
    let (mut socket, _) = logged_in(&gateway).await;
    socket.write_all(b"~\0\0\0\x04").await.unwrap();
    let error = read_error(&mut socket).await;
    assert_eq!(error_field(&error, b'S').as_deref(), Some("FATAL"));
    assert_eq!(error_field(&error, b'C').as_deref(), Some("08P01"));
    assert_closed(&mut socket).await;
    assert_eq!(select_one(&bystander).await, 1);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_claiming_one_gib_is_refused_at_once() {
    let gateway = Gateway::start().await;
    let (mut socket, _) = logged_in(&gateway).await;
    // Only the header: a gateway that waited for the body would hang here.
    socket.write_all(b"Q\x40\0\0\0").await.unwrap();
    let error = read_error(&mut socket).await;
    assert_eq!(error_field(&error, b'S').as_deref(), Some("FATAL"));
    assert_eq!(error_field(&error, b'C').as_deref(), Some("08P01"));
    assert_closed(&mut socket).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_client_login_timeout() {
    let mut config = test_config();
    config.client_login_timeout = Some(Duration::from_millis(500));
    let gateway = Gateway::start_with(config).await;
    let mut socket = raw_connect(&gateway).await;
    let started = Instant::now();
    let error = read_error(&mut socket).await;
    assert_eq!(error_field(&error, b'C').as_deref(), Some("08P01"));
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "refused after {:?}, before the login timeout",
        started.elapsed()
    );
    assert_closed(&mut socket).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_trickling_its_login_is_closed_after_client_login_timeout() {
    let mut config = test_config();
    config.client_login_timeout = Some(Duration::from_millis(800));
    let gateway = Gateway::start_with(config).await;
    let mut socket = raw_connect(&gateway).await;
    let started = Instant::now();
    // A valid startup packet, one byte every 100 ms: never finished in time.
    let packet = b"\0\0\0\x29\0\x03\0\0user\0postgres\0database\0postgres\0\0";
    for byte in packet {
        if socket.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let error = read_error(&mut socket).await;
    assert_eq!(error_field(&error, b'C').as_deref(), Some("08P01"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "dropped after {:?}",
        started.elapsed()
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_with_a_wrong_key_is_closed_without_an_answer() {
    let gateway = Gateway::start().await;
    let (_target, welcome) = logged_in(&gateway).await;
    let key = &welcome
        .iter()
        .find(|(tag, _)| *tag == b'K')
        .expect("BackendKeyData")
        .1;
    let process_id = i32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    let secret_key = i32::from_be_bytes([key[4], key[5], key[6], key[7]]);

    let mut socket = raw_connect(&gateway).await;
    socket
        .write_all(&request(
            CANCEL_REQUEST,
            &[process_id, secret_key.wrapping_add(1)],
        ))
        .await
        .unwrap();
    assert_closed(&mut socket).await;
    let client = gateway.connect().await;
    assert_eq!(select_one(&client).await, 1);
    gateway.stop().await;
}

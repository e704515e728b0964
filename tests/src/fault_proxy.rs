//! A fault-injecting stand-in for one tenant's S3 endpoint, in front of the
//! emulator's S3: per access key id (read from the SigV4 `Authorization` header),
//! requests are passed through, refused (403 `InvalidAccessKeyId`, as a store
//! does for bad credentials), failed (503 `SlowDown`, as a throttling or broken
//! store does), all of them or only those naming a given object, left without an
//! answer (a hanging store) or answered late (a slow one). It counts the
//! requests it saw per key, so a test can tell that nothing was attempted.
//!
//! HTTP/1.1 only, as much as the AWS SDK speaks to S3: a request head, then a
//! `Content-Length` body. A passed-through request is sent upstream with
//! `Connection: close` and the answer relayed until the emulator closes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// 403 InvalidAccessKeyId: a refusal, final for the backup.
    Refuse,
    /// 503 SlowDown: transient, retried.
    Fail,
    /// 503 SlowDown for requests with a body whose target contains this text
    /// (e.g. one object's name); the others, and empty bodies (an object being
    /// emptied), passed through.
    FailWhere(&'static str),
    /// 503 SlowDown for reads (`GET`) whose target contains this text (e.g. one
    /// object's name): a store failing in the middle of a restore.
    FailReads(&'static str),
    /// The connection is accepted and the request read, then nothing: no answer
    /// ever, until the client gives up and closes it (a hanging store). Requests
    /// that arrive once the mode is changed are served by the new mode; one
    /// already hanging goes on hanging.
    Hang,
    /// Passed through, the answer only after this long (a slow store).
    Slow(std::time::Duration),
}

#[derive(Default)]
struct Rules {
    faults: HashMap<String, Fault>,
    seen: HashMap<String, usize>,
}

/// A running proxy; it stops with the test's runtime.
pub struct FaultProxy {
    pub addr: SocketAddr,
    rules: Arc<Mutex<Rules>>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1, forwarding to `upstream` (host:port).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let rules = Arc::new(Mutex::new(Rules::default()));
        let shared = rules.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let rules = shared.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    // A client that goes away mid-request is not the test's concern.
                    let _ = serve(socket, &upstream, &rules).await;
                });
            }
        });
        Self { addr, rules }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, access_key_id: &str, fault: Fault) {
        let mut rules = self.rules.lock().expect("rules");
        rules.faults.insert(access_key_id.to_owned(), fault);
    }

    /// Requests seen so far signed with this access key id.
    pub fn seen(&self, access_key_id: &str) -> usize {
        let rules = self.rules.lock().expect("rules");
        rules.seen.get(access_key_id).copied().unwrap_or(0)
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `Credential=<akid>/<date>/...` of a SigV4 Authorization header.
fn access_key_id(head: &str) -> String {
    header(head, "authorization")
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("")
        .to_owned()
}

async fn read_request(socket: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf.split_off(head_end);
    while body.len() < length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some((head, body)))
}

fn canned(status: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn serve(mut socket: TcpStream, upstream: &str, rules: &Mutex<Rules>) -> std::io::Result<()> {
    while let Some((head, body)) = read_request(&mut socket).await? {
        let akid = access_key_id(&head);
        let fault = {
            let mut rules = rules.lock().expect("rules");
            *rules.seen.entry(akid.clone()).or_default() += 1;
            rules.faults.get(&akid).copied().unwrap_or(Fault::Pass)
        };
        let target = head.split_whitespace().nth(1).unwrap_or("");
        let fault = match fault {
            Fault::FailWhere(text) if target.contains(text) && !body.is_empty() => Fault::Fail,
            Fault::FailWhere(_) => Fault::Pass,
            Fault::FailReads(text) if target.contains(text) && head.starts_with("GET ") => {
                Fault::Fail
            }
            Fault::FailReads(_) => Fault::Pass,
            other => other,
        };
        match fault {
            Fault::Hang => {
                // Never answer; read (and drop) whatever else comes until the
                // client closes the connection.
                let mut drain = [0u8; 8192];
                while socket.read(&mut drain).await? > 0 {}
                return Ok(());
            }
            Fault::Slow(delay) => {
                tokio::time::sleep(delay).await;
                return pass_through(socket, upstream, &head, &body).await;
            }
            Fault::Refuse => {
                socket
                    .write_all(&canned(
                        "403 Forbidden",
                        "InvalidAccessKeyId",
                        "The AWS Access Key Id you provided does not exist in our records.",
                    ))
                    .await?
            }
            Fault::Fail => {
                socket
                    .write_all(&canned(
                        "503 Slow Down",
                        "SlowDown",
                        "Please reduce your request rate.",
                    ))
                    .await?
            }
            Fault::Pass | Fault::FailWhere(_) | Fault::FailReads(_) => {
                return pass_through(socket, upstream, &head, &body).await;
            }
        }
    }
    Ok(())
}

/// Sends the request upstream with `Connection: close`, relays the answer, and
/// ends the connection (the answer may be delimited by the close).
async fn pass_through(
    mut socket: TcpStream,
    upstream: &str,
    head: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let mut up = TcpStream::connect(upstream).await?;
    let mut request: String = head
        .trim_end_matches("\r\n")
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    request.push_str("connection: close\r\n\r\n");
    up.write_all(request.as_bytes()).await?;
    up.write_all(body).await?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer).await?;
    socket.write_all(&answer).await?;
    socket.shutdown().await
}

//! `make dev` itself: it serves the API, prints the base URL and admin token, and
//! leaves no process behind on Ctrl-C (SIGINT to the terminal's process group) or
//! SIGTERM (to make). Runs its own stack on ports of its own.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const API_PORT: u16 = 9211;
const EMULATOR_PORT: u16 = 4777;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Every process whose command line or environment names one of our ports.
fn processes_of_this_stack() -> Vec<String> {
    let needles = [
        format!("{EMULATOR_PORT}"),
        format!("127.0.0.1:{API_PORT}"),
        format!("--invoke-port\0{API_PORT}"),
    ];
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) || pid == me {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmdline).to_string();
        let env = String::from_utf8_lossy(&environ).to_string();
        let ours = needles.iter().any(|n| cmd.contains(n.as_str()))
            || env.contains(&format!("SUBKV_PORT={API_PORT}"));
        if ours {
            found.push(format!("{pid}: {}", cmd.replace('\0', " ")));
        }
    }
    found
}

/// Starts `make dev` in a process group of its own (as a terminal would) and waits
/// for its banner. Returns the child and the admin token it printed.
fn start_make_dev() -> (Child, String) {
    assert!(
        !port_open(API_PORT) && !port_open(EMULATOR_PORT),
        "test ports busy"
    );
    let mut command = Command::new("make");
    command
        .arg("--no-print-directory")
        .arg("dev")
        .current_dir(repo())
        .env("SUBKV_PORT", API_PORT.to_string())
        .env("SUBKV_EMULATOR_PORT", EMULATOR_PORT.to_string())
        .env_remove("SUBKV_ADMIN_TOKEN")
        .env_remove("MAKEFLAGS")
        .env_remove("MAKELEVEL")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(repo().join("target/stack-test-make.log")).expect("log file"),
        ))
        .process_group(0);
    // A terminal's Ctrl-C reaches a shell whose SIGINT is at its default. A test
    // runner may have inherited it ignored, and a shell cannot un-ignore a signal
    // ignored at entry, so reset it for the child the way a terminal session has it.
    // SAFETY: only async-signal-safe `signal` runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = command.spawn().expect("make dev starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut url, mut token) = (None, None);
    while url.is_none() || token.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("make dev prints its banner in time");
        if let Some(rest) = line.trim().strip_prefix("API base URL:") {
            url = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.trim().strip_prefix("admin token:") {
            token = Some(rest.trim().to_string());
        }
    }
    assert_eq!(
        url.as_deref(),
        Some(format!("http://127.0.0.1:{API_PORT}/v1").as_str())
    );
    (child, token.expect("token"))
}

fn wait_exit(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "make dev did not exit");
        std::thread::sleep(Duration::from_millis(100)); // polling a child's exit, not synchronising a test
    }
}

fn assert_stack_serves(token: &str) {
    use std::io::{Read, Write};
    let body = r#"{"name":"stack"}"#;
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", API_PORT)).expect("connect");
    write!(
        conn,
        "POST /v1/organizations HTTP/1.1\r\nHost: 127.0.0.1:{API_PORT}\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).expect("read");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"token\":\"skv_"), "{reply}");
}

/// Sends a signal with bash's builtin `kill` (a negative pid names a process group).
fn signal(sig: &str, target: &str) {
    let status = Command::new("bash")
        .args(["-c", &format!("kill -{sig} -- {target}")])
        .status()
        .expect("bash");
    assert!(status.success(), "kill -{sig} {target}");
}

fn assert_nothing_left() {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = processes_of_this_stack();
        if left.is_empty() && !port_open(API_PORT) && !port_open(EMULATOR_PORT) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes left behind: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(100)); // polling for exits
    }
}

#[test]
fn make_dev_serves_and_stops_cleanly_on_ctrl_c_and_sigterm() {
    // Ctrl-C: SIGINT to the whole foreground process group.
    let (mut child, token) = start_make_dev();
    assert_stack_serves(&token);
    assert!(
        !processes_of_this_stack().is_empty(),
        "the probe must see the running stack"
    );
    signal("INT", &format!("-{}", child.id()));
    wait_exit(&mut child);
    assert_nothing_left();

    // SIGTERM to make alone (what a supervisor sends).
    let (mut child, token) = start_make_dev();
    assert_stack_serves(&token);
    signal("TERM", &child.id().to_string());
    wait_exit(&mut child);
    assert_nothing_left();
}

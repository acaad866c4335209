//! Malformed and hostile input on the DICOM port, sent from raw sockets to the real `segnode
//! serve` binary. For every case the node must close the connection, or answer with
//! A-ASSOCIATE-RJ / A-ABORT, within its ARTIM timeout (plus a margin for a loaded machine),
//! and afterwards a real dcmtk `echoscu` must still be answered.
//!
//! Run with `cargo test -p conformance --test integration -- malformed:: --nocapture` to see the outcome
//! table (case -> what came back -> how long it took).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{free_port, segnode_bin, wait_listening, ChildGuard};

const AET: &str = "SEGNODE";
const ARTIM_S: u64 = 2;
const IDLE_S: u64 = 5;
/// Slack over ARTIM for a debug build on a shared 2-core machine.
const MARGIN: Duration = Duration::from_secs(3);
/// How long we wait for an answer at all before calling the case a hang.
const HANG_LIMIT: Duration = Duration::from_secs(20);

const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";
const VERIFICATION: &str = "1.2.840.10008.1.1";
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

/// A 16-byte AE title field, space padded (PS3.8 9.3.2).
fn ae_field(ae: &str) -> [u8; 16] {
    let mut f = [b' '; 16];
    f[..ae.len()].copy_from_slice(ae.as_bytes());
    f
}

/// An item: type, reserved byte, 2-byte big-endian length, value (PS3.8 9.3.2.x).
fn item(item_type: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![item_type, 0];
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2): application context, one presentation context
/// (Verification, Implicit VR Little Endian), user information with the maximum length.
fn associate_rq(called: [u8; 16], protocol_version: u16) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&protocol_version.to_be_bytes());
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&called);
    body.extend_from_slice(&ae_field("TESTSCU"));
    body.extend_from_slice(&[0; 32]);
    body.extend(item(0x10, APPLICATION_CONTEXT.as_bytes()));
    let mut pc = vec![1, 0, 0, 0]; // presentation context id 1, three reserved bytes
    pc.extend(item(0x30, VERIFICATION.as_bytes()));
    pc.extend(item(0x40, IMPLICIT_VR_LE.as_bytes()));
    body.extend(item(0x20, &pc));
    let max_length = item(0x51, &16384u32.to_be_bytes());
    body.extend(item(0x50, &max_length));
    pdu(0x01, &body)
}

/// A PDU: type, reserved byte, 4-byte big-endian length, body (PS3.8 9.3.1).
fn pdu(pdu_type: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![pdu_type, 0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn with_length(mut pdu: Vec<u8>, length: u32) -> Vec<u8> {
    pdu[2..6].copy_from_slice(&length.to_be_bytes());
    pdu
}

fn release_rq() -> Vec<u8> {
    pdu(0x05, &[0; 4])
}

/// What the node did with one connection.
#[derive(Debug)]
struct Observed {
    /// PDU types found in what came back, in order (0x02 AC, 0x03 RJ, 0x06 RP, 0x07 A-ABORT).
    pdus: Vec<u8>,
    /// The same PDUs, named with their result/source/reason fields where they have them.
    names: Vec<String>,
    /// Bytes that did not parse as whole PDUs.
    trailing: usize,
    /// How the byte stream ended: "EOF", "RST" or "HANG" (nothing ended it within HANG_LIMIT).
    end: &'static str,
    elapsed: Duration,
}

impl Observed {
    fn describe(&self) -> String {
        let mut parts = self.names.clone();
        if self.trailing > 0 {
            parts.push(format!("{} stray bytes", self.trailing));
        }
        parts.push(self.end.to_string());
        parts.join(" + ")
    }
}

/// Split what came back into whole PDUs: (type, name with its fields) each, and the
/// number of bytes left over.
fn split_pdus(bytes: &[u8]) -> (Vec<(u8, String)>, usize) {
    let mut pdus = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 6 {
        let len = u32::from_be_bytes(bytes[at + 2..at + 6].try_into().unwrap()) as usize;
        if bytes.len() - at - 6 < len {
            break;
        }
        let body = &bytes[at + 6..at + 6 + len];
        let t = bytes[at];
        // RJ: reserved, result, source, reason; A-ABORT: 2 reserved, source, reason.
        let name = match (t, body) {
            (0x02, _) => "A-ASSOCIATE-AC".to_string(),
            (0x03, [_, result, source, reason]) => {
                format!("A-ASSOCIATE-RJ({result}/{source}/{reason})")
            }
            (0x06, _) => "A-RELEASE-RP".to_string(),
            (0x07, [_, _, source, reason]) => format!("A-ABORT({source}/{reason})"),
            _ => format!("PDU 0x{t:02X}"),
        };
        pdus.push((t, name));
        at += 6 + len;
    }
    (pdus, bytes.len() - at)
}

/// Read whatever comes back until the node closes the connection (or HANG_LIMIT passes),
/// timing from `start`. `after_first_pdu` is sent once a first complete PDU has arrived.
fn observe(mut s: TcpStream, start: Instant, mut after_first_pdu: Option<Vec<u8>>) -> Observed {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let left = HANG_LIMIT.saturating_sub(start.elapsed());
        if left.is_zero() {
            break "HANG";
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break "EOF",
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if !split_pdus(&got).0.is_empty() {
                    if let Some(next) = after_first_pdu.take() {
                        let _ = s.write_all(&next);
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break "HANG"
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break "RST",
        }
    };
    let elapsed = start.elapsed();
    let (pdus, trailing) = split_pdus(&got);
    let _ = s.shutdown(Shutdown::Both);
    Observed {
        pdus: pdus.iter().map(|(t, _)| *t).collect(),
        names: pdus.into_iter().map(|(_, name)| name).collect(),
        trailing,
        end,
        elapsed,
    }
}

/// Connect, send `bytes` (the write side stays open: the node must decide by itself), and
/// observe the answer.
fn send_raw(port: u16, bytes: &[u8], after_first_pdu: Option<Vec<u8>>) -> Observed {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to segnode");
    s.set_nodelay(true).unwrap();
    let start = Instant::now();
    // The node may already have closed: a failed write is an outcome, not a test error.
    let _ = s.write_all(bytes);
    observe(s, start, after_first_pdu)
}

fn echo_ok(echoscu: &std::path::Path, port: u16) -> (bool, String) {
    let out = Command::new(echoscu)
        .args(["-aet", "TESTSCU", "-aec", AET, "-to", "10", "-ta", "10"])
        .args(["127.0.0.1", &port.to_string()])
        .env("TCP_NODELAY", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run echoscu");
    (
        out.status.success(),
        format!(
            "rc {:?}: {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// What a case requires of the node's answer.
enum Expect {
    /// Pre-association garbage: close, RJ or A-ABORT; never an AC.
    Refused,
    /// The association may be accepted or rejected (PS3.8 tests only bit 0 of the version).
    AcceptOrReject,
    /// A valid RQ followed by garbage: AC first, then A-ABORT or close.
    AcceptedThenDropped,
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// Sent after the node's first PDU (the garbage after an AC, or a release after an AC).
    then: Option<Vec<u8>>,
    expect: Expect,
}

fn cases() -> Vec<Case> {
    let good = associate_rq(ae_field(AET), 1);
    let mut p_data_tf = Vec::new();
    // one PDV item: length 6, presentation context 1, control header "last command fragment"
    p_data_tf.extend_from_slice(&6u32.to_be_bytes());
    p_data_tf.extend_from_slice(&[1, 0x03, 0xde, 0xad, 0xbe, 0xef]);
    vec![
        Case {
            name: "connect, then silence",
            bytes: Vec::new(),
            then: None,
            expect: Expect::Refused,
        },
        Case {
            name: "non-DICOM bytes (HTTP GET)",
            bytes: b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(),
            then: None,
            expect: Expect::Refused,
        },
        Case {
            name: "unknown PDU type 0x0F",
            bytes: pdu(0x0F, &[0; 4]),
            then: None,
            expect: Expect::Refused,
        },
        Case {
            name: "P-DATA-TF before association",
            bytes: pdu(0x04, &p_data_tf),
            then: None,
            expect: Expect::Refused,
        },
        Case {
            name: "truncated A-ASSOCIATE-RQ, then silence",
            bytes: good[..good.len() / 2].to_vec(),
            then: None,
            expect: Expect::Refused,
        },
        Case {
            name: "A-ASSOCIATE-RQ length 0xFFFFFFFF",
            bytes: with_length(good.clone(), 0xFFFF_FFFF),
            then: None,
            expect: Expect::Refused,
        },
        Case {
            name: "A-ASSOCIATE-RQ length too short (0x20)",
            bytes: with_length(good.clone(), 0x20),
            then: None,
            expect: Expect::Refused,
        },
        Case {
            name: "A-ASSOCIATE-RQ protocol version 7",
            bytes: associate_rq(ae_field(AET), 7),
            then: Some(release_rq()),
            expect: Expect::AcceptOrReject,
        },
        Case {
            name: "A-ASSOCIATE-RQ empty (all-spaces) called AE",
            bytes: associate_rq([b' '; 16], 1),
            then: None,
            expect: Expect::Refused,
        },
        Case {
            name: "valid A-ASSOCIATE-RQ, then garbage",
            bytes: good,
            then: Some(b"this is not a PDU at all\r\n".to_vec()),
            expect: Expect::AcceptedThenDropped,
        },
    ]
}

#[test]
fn malformed_pdus_are_refused_within_artim_and_the_node_keeps_serving() {
    let echoscu = testkit::require_tool("echoscu");
    let bin = segnode_bin();
    let data = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut node = ChildGuard::spawn(
        Command::new(&bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(data.path())
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--http", "off", "--aet", AET, "--quiet-period", "600"])
            .args(["--artim-timeout", &ARTIM_S.to_string()])
            .args(["--idle-timeout", &IDLE_S.to_string()])
            .args(["--max-associations", "4", "--min-free-disk-mb", "1"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    wait_listening(&mut node, "segnode", port, Duration::from_secs(30));
    let (ok, log) = echo_ok(&echoscu, port);
    assert!(ok, "echoscu fails before any malformed input: {log}");

    let limit = Duration::from_secs(ARTIM_S) + MARGIN;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for case in cases() {
        let seen = send_raw(port, &case.bytes, case.then);
        let outcome = seen.describe();
        let mut problems = Vec::new();
        if seen.end == "HANG" {
            problems.push(format!("connection still open after {HANG_LIMIT:?}"));
        } else if seen.elapsed > limit {
            problems.push(format!(
                "took {:.2} s, over ARTIM {ARTIM_S} s + {MARGIN:?}",
                seen.elapsed.as_secs_f64()
            ));
        }
        let first = seen.pdus.first().copied();
        match case.expect {
            Expect::Refused => {
                if !matches!(first, None | Some(0x03) | Some(0x07)) {
                    problems.push("expected close, A-ASSOCIATE-RJ or A-ABORT".into());
                }
            }
            Expect::AcceptOrReject => match first {
                Some(0x03) => {}
                Some(0x02) => {
                    if seen.pdus.get(1) != Some(&0x06) {
                        problems.push("accepted, but no A-RELEASE-RP to our release".into());
                    }
                }
                _ => problems.push("expected A-ASSOCIATE-AC or A-ASSOCIATE-RJ".into()),
            },
            Expect::AcceptedThenDropped => {
                if first != Some(0x02) {
                    problems.push("a valid RQ was not accepted".into());
                }
                if !matches!(seen.pdus.get(1), None | Some(0x07)) || seen.pdus.len() > 2 {
                    problems.push("expected A-ABORT or close after the garbage".into());
                }
            }
        }
        let (alive, log) = echo_ok(&echoscu, port);
        if !alive {
            problems.push(format!("echoscu failed afterwards: {log}"));
        }
        if let Ok(Some(st)) = node.child().try_wait() {
            panic!("segnode exited ({st}) after case {:?}", case.name);
        }
        rows.push((
            case.name,
            outcome,
            seen.elapsed,
            if alive { "ok" } else { "FAILED" },
        ));
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.name, problems.join("; ")));
        }
    }

    println!();
    println!(
        "malformed input vs segnode serve (ARTIM {ARTIM_S} s, idle {IDLE_S} s, limit {:.0} s; \
         RJ(result/source/reason), A-ABORT(source/reason))",
        limit.as_secs_f64()
    );
    println!(
        "| {:<44} | {:<36} | {:>7} | {:<9} |",
        "case", "outcome", "time s", "echo after"
    );
    println!("|{:-<46}|{:-<38}|{:-<9}|{:-<12}|", "", "", "", "");
    for (name, outcome, elapsed, echo) in &rows {
        println!(
            "| {:<44} | {:<36} | {:>7.2} | {:<10} |",
            name,
            outcome,
            elapsed.as_secs_f64(),
            echo
        );
    }
    assert!(
        failures.is_empty(),
        "segnode mishandled malformed input:\n{}",
        failures.join("\n")
    );
    let _ = node.terminate(Duration::from_secs(15));
}

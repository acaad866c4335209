//! DICOM TLS with real peers: dcmtk's storescu (OpenSSL) and pynetdicom (Python's ssl) against
//! `segnode serve --tls-cert --tls-key --tls-client-ca`. Every certificate is made here with
//! openssl, for this run (no committed private keys).

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{audit_events, Storescp};
use staging::{Job, SqliteQueue};
use testkit::{
    free_port, require_tool, segnode_bin, wait_listening, wait_until, workspace_root, ChildGuard,
    Node,
};

/// A throwaway PKI: a CA, the node's certificate (for 127.0.0.1), clients signed by the CA
/// (`pacs1`, `pacs2`), one expired, and one from another CA.
struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(require_tool("openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    fn make() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let mut a = vec!["req", "-x509"];
            a.extend_from_slice(&key);
            let subj = format!("/CN={ca}");
            let ca_key = format!("{ca}.key");
            a.extend_from_slice(&["-keyout", &ca_key]);
            let out = format!("{ca}.pem");
            a.extend_from_slice(&["-out", &out, "-subj", &subj, "-days", "2"]);
            openssl(d, &a);
        }
        std::fs::write(d.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        let issue = |name: &str, cn: &str, ca: &str, days: &str, ext: &str| {
            let mut a = vec!["req"];
            a.extend_from_slice(&key);
            let (k, csr, pem, subj) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("/O=Test Hospital/CN={cn}"),
            );
            a.extend_from_slice(&["-keyout", &k, "-out", &csr, "-subj", &subj]);
            openssl(d, &a);
            let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ca_pem,
                    "-CAkey",
                    &ca_key,
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    days,
                    "-extfile",
                    ext,
                ],
            );
        };
        issue("server", "segnode", "ca", "2", "server.ext");
        issue("pacs1", "pacs1", "ca", "2", "client.ext");
        issue("pacs2", "pacs2", "ca", "2", "client.ext");
        issue("stranger", "pacs1", "other-ca", "2", "client.ext");
        // Valid from now to now: expired a second later.
        issue("expired", "pacs1", "ca", "0", "client.ext");
        std::thread::sleep(Duration::from_millis(1100));
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// `segnode serve --workers 0` with TLS (and mutual TLS), started here rather than by
/// `testkit::Node` so the plain port can be turned off.
struct TlsNode {
    tls_port: u16,
    /// The plain port, unless `--port 0` turned it off.
    plain_port: Option<u16>,
    data: tempfile::TempDir,
    audit: PathBuf,
    log: PathBuf,
    _child: ChildGuard,
}

fn tls_node(pki: &Pki, plain: bool, extra: &[&str]) -> TlsNode {
    tls_node_with(pki, plain, false, extra)
}

/// `pem_in_env`: the certificate, key and client CA as PEM text in SEGNODE_TLS_*_PEM (as ECS
/// injects Secrets Manager secrets) instead of files.
fn tls_node_with(pki: &Pki, plain: bool, pem_in_env: bool, extra: &[&str]) -> TlsNode {
    let data = tempfile::tempdir().unwrap();
    let audit = data.path().join("audit.jsonl");
    let log = data.path().join("node.log");
    let tls_port = free_port();
    let plain_port = plain.then(free_port);
    let mut cmd = Command::new(segnode_bin());
    cmd.args([
        "serve",
        "--workers",
        "0",
        "--http",
        "off",
        "--aet",
        "SEGNODE",
    ])
    .args(["--bind", "127.0.0.1", "--data-dir"])
    .arg(data.path().join("node"))
    .args(["--port", &plain_port.unwrap_or(0).to_string()])
    .args(["--tls-port", &tls_port.to_string()])
    .arg("--audit-log")
    .arg(&audit)
    .args(extra)
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    let files = [
        ("--tls-cert", "SEGNODE_TLS_CERT_PEM", "server.pem"),
        ("--tls-key", "SEGNODE_TLS_KEY_PEM", "server.key"),
        ("--tls-client-ca", "SEGNODE_TLS_CLIENT_CA_PEM", "ca.pem"),
    ];
    for (flag, var, name) in files {
        if pem_in_env {
            cmd.env(var, std::fs::read_to_string(pki.path(name)).unwrap());
        } else {
            cmd.args([flag, &pki.path(name)]);
        }
    }
    let mut child = ChildGuard::spawn(&mut cmd);
    wait_listening(&mut child, "segnode", tls_port, Duration::from_secs(30));
    if let Some(p) = plain_port {
        wait_listening(&mut child, "segnode", p, Duration::from_secs(30));
    }
    TlsNode {
        tls_port,
        plain_port,
        data,
        audit,
        log,
        _child: child,
    }
}

fn series() -> PathBuf {
    workspace_root().join("testdata/studies/synth-007-axial-rle/dicom/04_FLAIR")
}

/// A dcmtk tool; (exit code, stdout + stderr).
fn dcmtk(tool: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(require_tool(tool))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

impl TlsNode {
    /// storescu over TLS with `client` (a name in the PKI, or None for no certificate).
    fn storescu(&self, pki: &Pki, client: Option<&str>, calling: &str) -> (i32, String) {
        let (k, c, ca, port) = (
            client.map(|n| pki.path(&format!("{n}.key"))),
            client.map(|n| pki.path(&format!("{n}.pem"))),
            pki.path("ca.pem"),
            self.tls_port.to_string(),
        );
        let mut args: Vec<&str> = match (&k, &c) {
            (Some(k), Some(c)) => vec!["+tls", k, c],
            _ => vec!["+tla"],
        };
        let dir = series().display().to_string();
        // -xr: propose RLE (the files' transfer syntax).
        args.extend_from_slice(&["-xr", "+cf", &ca, "-aet", calling, "-aec", "SEGNODE"]);
        args.extend_from_slice(&["+sd", "+r", "127.0.0.1", &port, &dir]);
        dcmtk("storescu", &args)
    }

    fn events(&self, event: &str) -> Vec<serde_json::Value> {
        audit_events(&self.audit, event)
    }

    /// The jobs the listener has put on its queue.
    fn wait_jobs(&self) -> Vec<Job> {
        let q = SqliteQueue::open(self.data.path().join("node/queue.sqlite"), 3).unwrap();
        wait_until(Duration::from_secs(60), "a job on the queue", || {
            let jobs: Vec<Job> = q
                .peek()
                .unwrap()
                .iter()
                .map(|m| Job::from_json(&m.body).unwrap())
                .collect();
            (!jobs.is_empty()).then_some(jobs)
        })
    }
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn mutual_tls_from_dcmtk_is_accepted_and_bad_certificates_are_refused() {
    let pki = Pki::make();
    let n = tls_node(&pki, true, &["--quiet-period", "1"]);

    let (rc, out) = n.storescu(&pki, Some("pacs1"), "PACS");
    assert_eq!(rc, 0, "a client certificate from the CA: {out}");
    let jobs = n.wait_jobs();
    assert_eq!(jobs[0].object_count(), files_in(&series()));
    let accepted = n.events("association_accepted");
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0]["tls_subject"], "O=Test Hospital, CN=pacs1");
    let config = &n.events("config_loaded")[0];
    assert!(
        config["listeners"].to_string().contains(&format!(
            "dicom-tls 127.0.0.1:{} (client certificates required)",
            n.tls_port
        )),
        "{config}"
    );

    for (client, what) in [
        (None, "no client certificate"),
        (Some("stranger"), "a certificate from another CA"),
        (Some("expired"), "an expired certificate"),
    ] {
        let (rc, out) = n.storescu(&pki, client, "PACS");
        assert_ne!(rc, 0, "{what} must be refused: {out}");
    }
    // A plaintext client on the TLS port gets nowhere, and the node goes on.
    let (rc, out) = dcmtk(
        "storescu",
        &[
            "-aet",
            "PACS",
            "-aec",
            "SEGNODE",
            "127.0.0.1",
            &n.tls_port.to_string(),
            &series().join("IM_0001.dcm").display().to_string(),
        ],
    );
    assert_ne!(rc, 0, "plaintext on the TLS port: {out}");
    assert_eq!(
        n.events("association_accepted").len(),
        1,
        "no refused client got an association"
    );
    // The plain port still works beside the TLS one (no --port 0), and the node lives on.
    let port = n.plain_port.unwrap().to_string();
    let one = series().join("IM_0001.dcm").display().to_string();
    let (rc, out) = dcmtk(
        "storescu",
        &[
            "-xr",
            "-aet",
            "PACS",
            "-aec",
            "SEGNODE",
            "127.0.0.1",
            &port,
            &one,
        ],
    );
    assert_eq!(rc, 0, "plain port: {out}");
}

#[test]
fn an_allowlist_entry_can_require_a_certificate_name_and_port_0_turns_plain_tcp_off() {
    let pki = Pki::make();
    let n = tls_node(&pki, false, &["--allow-calling", "PACS@127.0.0.1#pacs1"]);
    let (rc, out) = n.storescu(&pki, Some("pacs1"), "PACS");
    assert_eq!(rc, 0, "the named certificate: {out}");
    let (rc, out) = n.storescu(&pki, Some("pacs2"), "PACS");
    assert_ne!(rc, 0, "a valid certificate with another name: {out}");
    let rejected = n.events("association_rejected");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["tls_subject"], "O=Test Hospital, CN=pacs2");
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .contains("common name"),
        "{rejected:?}"
    );
    // `--port 0` with TLS: no plain listener at all.
    let log = std::fs::read_to_string(&n.log).unwrap();
    assert!(log.contains("DICOM TLS listener ready"), "{log}");
    assert!(
        !log.contains("DICOM listener ready"),
        "plain TCP must be off: {log}"
    );
}

#[test]
fn a_silent_or_slow_handshake_is_closed_at_artim_without_holding_a_slot() {
    let pki = Pki::make();
    let n = tls_node(
        &pki,
        true,
        &["--artim-timeout", "2", "--max-associations", "1"],
    );
    // Two connections that never say anything on the TLS port.
    let mut silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", n.tls_port)).unwrap())
        .collect();
    // The only association slot is still free for a real client meanwhile.
    let (rc, out) = n.storescu(&pki, Some("pacs1"), "PACS");
    assert_eq!(rc, 0, "{out}");
    let started = Instant::now();
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 64];
        // EOF (0) or a reset: the node closed it.
        let closed = matches!(s.read(&mut buf), Ok(0) | Err(_));
        assert!(closed, "a silent TLS connection was not closed");
    }
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "closed by ARTIM, not by the client's read timeout"
    );
}

/// pynetdicom over mutual TLS, to a node that has its certificate, key and client CA as PEM
/// text in variables (the CloudFormation stack's Secrets Manager path).
#[test]
fn pynetdicom_over_mutual_tls() {
    let pki = Pki::make();
    let n = tls_node_with(&pki, true, true, &[]);
    let script = r#"
import ssl, sys
from pynetdicom import AE
from pynetdicom.sop_class import Verification
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
ctx.load_cert_chain(certfile=cert, keyfile=key)
ae = AE(ae_title="PYNETDICOM")
ae.add_requested_context(Verification)
assoc = ae.associate("127.0.0.1", port, ae_title="SEGNODE", tls_args=(ctx, "127.0.0.1"))
if not assoc.is_established:
    print("not established"); sys.exit(2)
status = assoc.send_c_echo()
assoc.release()
print(f"echo 0x{status.Status:04X}")
"#;
    let out = Command::new(testkit::python())
        .args(["-c", script])
        .args([
            &n.tls_port.to_string(),
            &pki.path("ca.pem"),
            &pki.path("pacs1.pem"),
            &pki.path("pacs1.key"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("echo 0x0000"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Delivery over DICOM TLS: to dcmtk's storescp requiring our client certificate (success), and
/// to a plain port while TLS is required (each attempt fails, the job is dead-lettered with the
/// reason). The audit trail has both outcomes.
#[test]
fn results_go_to_a_tls_destination_and_never_in_clear_to_a_plain_one() {
    let pki = Pki::make();
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("pacs1.pem"),
        pki.path("pacs1.key"),
    );
    let study = workspace_root().join("testdata/studies/synth-007-axial-rle/dicom");
    let node_with = |data: &Path, destination: &str, extra: &[&str]| {
        let audit = data.join("audit.jsonl").display().to_string();
        let mut args = vec![
            "--quiet-period",
            "2",
            "--retry-delay",
            "1",
            "--destination",
            destination,
            "--destination-tls-ca",
            &ca,
            "--destination-tls-cert",
            &cert,
            "--destination-tls-key",
            &key,
            "--audit-log",
            &audit,
        ];
        args.extend_from_slice(extra);
        Node::serve(&data.join("node"), &args)
    };
    let audit_of = |data: &Path, event: &str| audit_events(&data.join("audit.jsonl"), event);

    let (server_key, server_cert) = (pki.path("server.key"), pki.path("server.pem"));
    let viewer = Storescp::start(&["+tls", &server_key, &server_cert, "+cf", &ca]);
    let data = tempfile::tempdir().unwrap();
    let destination = format!("dicom-tls://{}", viewer.destination());
    let node = node_with(data.path(), &destination, &[]);
    let (rc, out) = node.send("dcmsend", "MODALITY", &[], &[&study]);
    assert_eq!(rc, 0, "{out}");
    wait_until(
        Duration::from_secs(300),
        "a SEG at the TLS destination",
        || viewer.segs().into_iter().next(),
    );
    let delivered = wait_until(Duration::from_secs(30), "the delivery in the audit", || {
        let d = audit_of(data.path(), "result_delivered");
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(delivered[0]["destination"], destination.as_str());
    assert!(
        delivered[0]["status"]
            .as_str()
            .unwrap()
            .starts_with("success"),
        "{delivered:?}"
    );

    // The same node configuration pointed at a plain storescp: never sent in clear.
    let plain = Storescp::start(&[]);
    let data = tempfile::tempdir().unwrap();
    let destination = format!("dicom-tls://{}", plain.destination());
    let node = node_with(
        data.path(),
        &destination,
        &[
            "--max-receives",
            "2",
            "--delivery-attempts",
            "2",
            "--delivery-backoff",
            "0.2",
        ],
    );
    let (rc, out) = node.send("dcmsend", "MODALITY", &[], &[&study]);
    assert_eq!(rc, 0, "{out}");
    let dead = wait_until(Duration::from_secs(300), "a dead letter", || {
        let d = audit_of(data.path(), "job_dead_lettered");
        (!d.is_empty()).then_some(d)
    });
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("failed 2 times") && reason.contains("TLS"),
        "{reason}"
    );
    let failed = audit_of(data.path(), "result_delivered");
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed
        .iter()
        .all(|f| f["status"].as_str().unwrap().starts_with("failed: ")));
    assert!(plain.segs().is_empty(), "a SEG went out in clear");
}

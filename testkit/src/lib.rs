//! Test harness shared by segnode's suites. It finds and starts the real peers the tests
//! drive (the moto server, dcmtk, the Python venv from `scripts/install-test-deps.sh`, the
//! built `segnode` binary) and fails loudly, naming the install step, when one is missing:
//! a test never skips because a tool is absent.
#![forbid(unsafe_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (the folder with the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .expect("testkit lives one level below the root")
        .to_path_buf()
}

/// The Python venv with pydicom, highdicom, pynetdicom, dcmqi and moto.
pub fn peers_venv() -> PathBuf {
    let venv = std::env::var_os("SEGNODE_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv-peers"));
    assert!(
        venv.join("bin/python").exists(),
        "the test peers venv {} is missing: run scripts/install-test-deps.sh (or set SEGNODE_PEERS_VENV)",
        venv.display()
    );
    venv
}

pub fn python() -> PathBuf {
    peers_venv().join("bin/python")
}

/// A command installed in the peers venv (moto_server, dcmqi tools...).
pub fn require_venv_tool(name: &str) -> PathBuf {
    let p = peers_venv().join("bin").join(name);
    assert!(
        p.exists(),
        "required test tool `{name}` is not in {}: run scripts/install-test-deps.sh",
        p.display()
    );
    p
}

/// A system command-line tool (dcmtk, dicom3tools, Orthanc) from PATH, or a panic naming the
/// install step. The venv is not searched: pynetdicom installs its own `storescu`/`echoscu`.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    // Skip an activated venv on PATH, for the same reason.
    for dir in std::env::split_paths(&path).filter(|d| !d.to_string_lossy().contains(".venv")) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("required test tool `{name}` is not installed: run scripts/install-test-deps.sh");
}

/// The `segnode` binary under test: `SEGNODE_BIN`, or the workspace's debug build.
pub fn segnode_bin() -> PathBuf {
    let bin = std::env::var_os("SEGNODE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug/segnode"));
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo build --bin segnode` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// A TCP port for a test server, free a moment ago on every address.
///
/// It is taken from outside the kernel's ephemeral range (`ip_local_port_range`), in order from
/// a start that depends on the process id. A port from bind(0) comes from that range, and other
/// tests' outgoing connections take their local ports from it too. A connection that grabs the
/// port between this call and the server's bind makes the server fail to start (EADDRINUSE);
/// the CI run of stop 27 lost a storescp that way. Two calls in one process never return the
/// same port, so two tests running side by side cannot connect to each other's servers either.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (lo, hi) = test_port_range();
    let span = u32::from(hi - lo) + 1;
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = lo + ((start + n) % span) as u16;
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port in {lo}..={hi}");
}

/// The ports [`free_port`] hands out: below the ephemeral range when there is room there
/// (Linux's default range is 32768-60999), otherwise above it.
fn test_port_range() -> (u16, u16) {
    let (eph_lo, eph_hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    if eph_lo > 12_000 {
        (10_000, eph_lo - 1)
    } else if eph_hi < 63_000 {
        (eph_hi + 1, 65_535)
    } else {
        panic!("the ephemeral port range {eph_lo}-{eph_hi} leaves no room for test servers");
    }
}

/// Wait until `child` accepts connections on 127.0.0.1:`port`; fail at once, saying so, when it
/// exits first (a server that cannot bind its port exits; waiting out the timeout would hide why).
pub fn wait_listening(child: &mut ChildGuard, what: &str, port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.child().try_wait() {
            panic!("{what} exited ({status}) before listening on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within {timeout:?}");
}

/// Poll `check` until it returns Some or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed (SIGKILL) and reaped when dropped, so a failing test leaves no server.
#[derive(Debug)]
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> Self {
        ChildGuard(Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
        ))
    }
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("still running")
    }
    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("still running").id()
    }
    /// SIGKILL now (a crash, as far as the process can tell) and wait for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// SIGTERM, then wait up to `timeout` for a clean exit; returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.0.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A moto server on a random loopback port, serving S3, SQS and ECS to the real AWS SDK.
pub struct Moto {
    pub port: u16,
    _child: ChildGuard,
}

impl Moto {
    /// Start the server and point this process's AWS SDK environment at dummy credentials.
    pub fn start() -> Self {
        let bin = require_venv_tool("moto_server");
        let port = free_port();
        let mut child = ChildGuard::spawn(
            Command::new(bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_listening(&mut child, "moto_server", port, Duration::from_secs(30));
        for (k, v) in Self::env() {
            std::env::set_var(k, v);
        }
        Moto {
            port,
            _child: child,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a child process needs to reach this server.
    pub fn env() -> [(&'static str, &'static str); 3] {
        [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ]
    }
}

/// A `segnode serve` under test, on a random port, logging to a file beside its data dir.
pub struct Node {
    pub port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: ChildGuard,
}

impl Node {
    /// Start `segnode serve --data-dir DATA --port P --http off --aet SEGNODE EXTRA...` and
    /// wait until it accepts connections.
    pub fn serve(data_dir: &Path, extra: &[&str]) -> Node {
        Node::start("serve", data_dir, extra)
    }

    /// `segnode serve` without workers: the listener and the queue only, so a test can look at the
    /// jobs it emits before anyone takes them.
    pub fn listener(data_dir: &Path, extra: &[&str]) -> Node {
        let mut args = vec!["--workers", "0"];
        args.extend_from_slice(extra);
        Node::start("serve", data_dir, &args)
    }

    /// Start `segnode SUBCOMMAND` (`serve` or `scp`) the same way.
    pub fn start(subcommand: &str, data_dir: &Path, extra: &[&str]) -> Node {
        Node::start_with_env(subcommand, data_dir, extra, &[])
    }

    /// [`Node::start`] with extra environment variables (e.g. credentials).
    pub fn start_with_env(
        subcommand: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let port = free_port();
        let mut args: Vec<String> = [
            subcommand,
            "--data-dir",
            &data_dir.display().to_string(),
            "--port",
            &port.to_string(),
            "--http",
            "off",
            "--aet",
            "SEGNODE",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = data_dir.with_extension(format!("{port}.log"));
        let child = Self::spawn(&args, &env, &log);
        let mut node = Node {
            port,
            data_dir: data_dir.to_path_buf(),
            log,
            args,
            env,
            child,
        };
        node.wait_ready();
        node
    }

    fn spawn(args: &[String], env: &[(String, String)], log: &Path) -> ChildGuard {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("node log file");
        ChildGuard::spawn(
            Command::new(segnode_bin())
                .args(args)
                .envs(env.iter().map(|(k, v)| (k, v)))
                .env("RUST_LOG", "info")
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        )
    }

    fn wait_ready(&mut self) {
        let what = format!("segnode (log {})", self.log.display());
        wait_listening(&mut self.child, &what, self.port, Duration::from_secs(30));
    }

    /// SIGKILL: the node gets no chance to clean up.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// SIGTERM, then wait up to `timeout` for the exit (SIGKILL after that); the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.child.terminate(timeout)
    }

    /// Start again on the same port and data dir (after `kill`).
    pub fn restart(&mut self) {
        self.child.kill();
        self.child = Self::spawn(&self.args, &self.env, &self.log);
        self.wait_ready();
    }

    /// The node's process id (for /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the node's process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.child().try_wait(), Ok(Some(_)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run a dcmtk tool against this node with `TCP_NODELAY=1`; returns (exit code, stdout+stderr).
    pub fn dcmtk(&self, tool: &str, args: &[&str]) -> (i32, String) {
        let out = Command::new(require_tool(tool))
            .args(args)
            .env("TCP_NODELAY", "1")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// `storescu -aet CALLING -aec SEGNODE [extra] +sd +r 127.0.0.1 PORT PATH`.
    pub fn storescu(&self, calling: &str, extra: &[&str], path: &Path) -> (i32, String) {
        self.send("storescu", calling, extra, &[path])
    }

    /// `TOOL -aet CALLING -aec SEGNODE [extra] +sd +r 127.0.0.1 PORT PATHS...` for dcmtk's
    /// storescu or dcmsend (same command-line shape).
    pub fn send(
        &self,
        tool: &str,
        calling: &str,
        extra: &[&str],
        paths: &[&Path],
    ) -> (i32, String) {
        let port = self.port.to_string();
        let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let mut args = vec!["-aet", calling, "-aec", "SEGNODE"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["+sd", "+r", "127.0.0.1", &port]);
        args.extend(paths.iter().map(String::as_str));
        self.dcmtk(tool, &args)
    }

    pub fn echoscu(&self, calling: &str, called: &str) -> (i32, String) {
        self.dcmtk(
            "echoscu",
            &[
                "-aet",
                calling,
                "-aec",
                called,
                "127.0.0.1",
                &self.port.to_string(),
            ],
        )
    }
}

/// Run `conformance/tools/make_series.py` (deterministic synthetic MR) into `out`.
pub fn make_series(out: &Path, args: &[&str]) {
    let script = workspace_root().join("conformance/tools/make_series.py");
    let st = Command::new(python())
        .arg(script)
        .arg(out)
        .args(args)
        .status()
        .expect("python");
    assert!(st.success(), "make_series.py failed for {}", out.display());
}

/// The instances a node's spool holds in its study folders (`<study>/<series>/<sop>.dcm`),
/// not its ingest journal or partial receptions.
pub fn spooled_instances(spool: &Path) -> Vec<PathBuf> {
    files_under(spool)
        .into_iter()
        .filter(|p| {
            p.strip_prefix(spool).is_ok_and(|rel| {
                !rel.components()
                    .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
            }) && p.extension().is_some_and(|e| e == "dcm")
        })
        .collect()
}

/// The spool's instances once `n` have reached their study folders (acknowledged instances
/// wait in the ingest journal until the stream pauses), after a short settle so that an
/// instance too many would show.
pub fn settled_spool(spool: &Path, n: usize) -> Vec<PathBuf> {
    wait_until(
        Duration::from_secs(20),
        &format!("{n} spooled instances"),
        || (spooled_instances(spool).len() >= n).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(500));
    spooled_instances(spool)
}

/// Run `cmd` to completion; it must succeed. Returns its standard output (the panic message
/// carries the command, its exit status, stdout and stderr).
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every file under `dir` as (path relative to `dir`, bytes), in path order.
pub fn named_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Every regular file below `dir`, in path order.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ports_are_distinct_and_never_ephemeral() {
        let (lo, hi) = test_port_range();
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ports.len(),
            "a port was handed out twice: {ports:?}"
        );
        assert!(ports.iter().all(|p| (lo..=hi).contains(p)), "{ports:?}");
        // An outgoing connection's local port (from the ephemeral range) is never one of them.
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let local = client.local_addr().unwrap().port();
        assert!(
            !(lo..=hi).contains(&local),
            "ephemeral port {local} in {lo}..={hi}"
        );
    }

    #[test]
    fn a_server_that_exits_is_reported_at_once() {
        let mut child = ChildGuard::spawn(&mut Command::new("false"));
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_listening(&mut child, "false", free_port(), Duration::from_secs(30))
        }))
        .unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        // Not "did not listen within 30s": it saw the exit instead of waiting out the timeout.
        assert!(msg.contains("exited"), "{msg}");
    }
}

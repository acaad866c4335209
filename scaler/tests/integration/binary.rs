//! `segnode scaler ...` as a black box: ticks against real SQS and ECS APIs (moto server on
//! loopback) move an ECS service's desiredCount with the queue; a dry-run tick on the
//! embedded SQLite queue; the simulator on a CSV trace.
//!
//! Real short windows (seconds) and polling with generous deadlines, no fake clock: the
//! binary uses Unix time between ticks, as it does in production.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use scaler::{Action, Decision, Reason};
use staging::{AwsSettings, JobQueue, SqliteQueue, SqsQueue};
use testkit::{segnode_bin, Moto};

/// Run `segnode scaler tick ARGS...`; the decision it prints.
fn tick(args: &[&str]) -> Decision {
    let stdout = testkit::stdout_of(
        Command::new(segnode_bin())
            .arg("scaler")
            .arg("tick")
            .args(args)
            .envs(Moto::env())
            .env("RUST_LOG", "warn"),
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
}

/// boto3 (the AWS SDK for Python, from the peers venv) against the moto server at `endpoint`: an
/// independent client to set up and read the ECS service the binary scales. Prints what `script`
/// prints.
fn boto3(endpoint: &str, script: &str) -> String {
    let program = format!(
        "import sys, boto3\n\
         ecs = boto3.client('ecs', endpoint_url=sys.argv[1], region_name='us-east-1')\n\
         {script}"
    );
    testkit::stdout_of(
        Command::new(testkit::python())
            .args(["-c", &program, endpoint])
            .envs(Moto::env()),
    )
}

fn desired_count(endpoint: &str) -> i32 {
    let out = boto3(
        endpoint,
        "print(ecs.describe_services(cluster='segnode', services=['workers'])\
         ['services'][0]['desiredCount'])",
    );
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn ticks_move_the_ecs_service_with_the_sqs_backlog() {
    let moto = Moto::start();
    let aws = AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.endpoint()),
    };
    let sqs = SqsQueue::create_with_dead_letter(&aws, "segnode-jobs", 3, Duration::from_secs(600))
        .await
        .unwrap();
    let queue = SqsQueue::connect(&aws, sqs.clone()).await;
    let ecs = moto.endpoint();
    boto3(
        &ecs,
        "ecs.create_cluster(clusterName='segnode')\n\
         ecs.register_task_definition(family='segnode-worker', containerDefinitions=[\
         {'name': 'worker', 'image': 'segnode:latest', 'memory': 512, 'command': ['worker']}])\n\
         ecs.create_service(cluster='segnode', serviceName='workers', \
         taskDefinition='segnode-worker', desiredCount=0)",
    );

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("scaler-state.json");
    let endpoint = moto.endpoint();
    let state_arg = state.display().to_string();
    let args = [
        "--queue-url",
        &sqs.queue_url,
        "--endpoint-url",
        &endpoint,
        "--region",
        "us-east-1",
        "--ecs-cluster",
        "segnode",
        "--ecs-service",
        "workers",
        "--state",
        &state_arg,
        "--target-per-task",
        "2",
        "--max-tasks",
        "10",
        "--stabilisation-secs",
        "3",
        "--cooldown-secs",
        "0",
        "--idle-secs",
        "8",
    ];

    // Empty queue, service at zero: nothing to do.
    let d = tick(&args);
    assert_eq!((d.desired, d.action), (0, Action::Hold));
    assert!(state.exists(), "tick keeps its state in the file");

    // Five studies: ceil(5 / 2) = 3 tasks, at once.
    for i in 0..5 {
        queue.send(&format!("job {i}"), None).await.unwrap();
    }
    let d = tick(&args);
    assert_eq!((d.backlog, d.desired, d.action), (5, 3, Action::ScaleOut));
    assert_eq!(desired_count(&ecs), 3);

    // Workers take two (in flight) and finish three: backlog 2, one task's worth. The
    // window still remembers 3.
    let got = queue
        .receive(5, Duration::from_secs(600), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(got.len(), 5);
    for m in &got[2..] {
        queue.delete(&m.receipt).await.unwrap();
    }
    let d = tick(&args);
    assert_eq!(d.backlog, 2, "in-flight messages count: {d:?}");
    assert_eq!(desired_count(&ecs), 3);

    // After the 3 s window: down to 1, and not below while the two are in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = tick(&args);
        let count = desired_count(&ecs);
        assert!(count >= 1, "never below the in-flight work: {d:?}");
        if count == 1 {
            assert_eq!((d.action, d.reason), (Action::ScaleIn, Reason::Stabilised));
            break;
        }
        assert!(Instant::now() < deadline, "no scale-in after the window");
        std::thread::sleep(Duration::from_millis(500));
    }

    // The last two are done: one task stays for the idle period, then zero.
    for m in &got[..2] {
        queue.delete(&m.receipt).await.unwrap();
    }
    let mut held_while_idle = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let d = tick(&args);
        assert_eq!(d.backlog, 0);
        if desired_count(&ecs) == 0 {
            assert_eq!((d.action, d.reason), (Action::ScaleIn, Reason::Idle));
            break;
        }
        assert_eq!(d.action, Action::Hold, "{d:?}");
        held_while_idle += 1;
        assert!(Instant::now() < deadline, "never went to zero");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        held_while_idle >= 1,
        "kept a task before the idle period ran out"
    );

    // One new study wakes the service from zero.
    queue.send("late job", None).await.unwrap();
    let d = tick(&args);
    assert_eq!((d.desired, d.action), (1, Action::ScaleOut));
    assert_eq!(desired_count(&ecs), 1);

    // ECS's own refusals reach the operator with their code: a cluster that does not exist
    // (an error answer) and a service that does not exist (a `failures` entry).
    for (cluster, service, expected) in [
        ("no-such-cluster", "workers", "ClusterNotFoundException"),
        ("segnode", "no-such-service", "MISSING"),
    ] {
        let mut bad = args.to_vec();
        let c = bad.iter().position(|a| *a == "--ecs-cluster").unwrap();
        bad[c + 1] = cluster;
        bad[c + 3] = service;
        let out = Command::new(segnode_bin())
            .args(["scaler", "tick"])
            .args(&bad)
            .envs(Moto::env())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cluster}/{service}: {stderr}");
        assert!(
            stderr.contains("DescribeServices") && stderr.contains(expected),
            "{cluster}/{service}: {stderr}"
        );
    }
    assert_eq!(desired_count(&ecs), 1, "a failed tick changes nothing");
}

#[tokio::test]
async fn dry_run_tick_on_the_sqlite_queue() {
    let dir = tempfile::tempdir().unwrap();
    let queue = SqliteQueue::open(dir.path().join("queue.sqlite"), 3).unwrap();
    for i in 0..9 {
        queue.send(&format!("job {i}"), None).await.unwrap();
    }
    let state = dir.path().join("state.json");
    let data = dir.path().display().to_string();
    let state_arg = state.display().to_string();
    let args = [
        "--data-dir",
        data.as_str(),
        "--dry-run",
        "--state",
        &state_arg,
        "--max-tasks",
        "4",
    ];
    let d = tick(&args);
    assert_eq!((d.backlog, d.desired, d.action), (9, 4, Action::ScaleOut));
    // The dry run remembers what it "set": the next tick starts from 4.
    let d = tick(&args);
    assert_eq!((d.current, d.action), (4, Action::Hold));
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("\"dry_run_tasks\": 4"), "{text}");

    // Without a target it refuses, naming the flags.
    let out = Command::new(segnode_bin())
        .args(["scaler", "tick", "--data-dir", &data, "--state", &state_arg])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dry-run"));
}

#[test]
fn simulate_a_csv_trace_and_plot_it() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("arrivals.csv");
    // A burst of 40 studies in the first minute, 20 s each, then one an hour later.
    let mut text = String::from("arrival_s,service_s\n");
    for i in 0..40 {
        text.push_str(&format!("{},20\n", i));
    }
    text.push_str("3600,20\n");
    std::fs::write(&csv, text).unwrap();
    let png = dir.path().join("plot.png");
    let stdout = testkit::stdout_of(
        Command::new(segnode_bin())
            .args(["scaler", "simulate", "--trace"])
            .arg(&csv)
            .args(["--price-per-task-hour", "0.1,1.5", "--plot"])
            .arg(&png),
    );
    let row = |label: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(label))
            .unwrap_or_else(|| panic!("no {label} row in:\n{stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let policy = row("policy");
    assert_eq!(policy[1], "41", "every study counted: {policy:?}");
    assert!(stdout.contains("$/study@1.5"), "{stdout}");
    assert!(row("fixed").len() >= 12, "fixed pool with both prices");
    assert_png(&png);
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}

/// Our ECS requests are signed as AWS signs them: a DescribeServices from `segnode scaler tick` is
/// captured by a local HTTP server and its SigV4 signature recomputed with botocore (the Python
/// SDK's signer, an independent implementation) from the same request and credentials. (moto
/// does not check signatures, so the moto tests above cannot catch a wrong one.)
#[test]
fn ecs_requests_carry_the_signature_botocore_computes() {
    let script = r#"
import http.server, sys
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
got = {}
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        got["headers"] = {k.lower(): v for k, v in self.headers.items()}
        got["body"] = self.rfile.read(int(self.headers["content-length"]))
        out = b'{"__type":"ClientException","message":"captured"}'
        self.send_response(400)
        self.send_header("content-type", "application/x-amz-json-1.1")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
srv.timeout = 60
print(srv.server_address[1], flush=True)
srv.handle_request()
if not got:
    print("no request within 60 s")
    sys.exit(1)
h = got["headers"]
ours = h["authorization"]
signed = ours.split("SignedHeaders=")[1].split(",")[0].split(";")
req = AWSRequest(method="POST", url="http://" + h["host"] + "/", data=got["body"],
                 headers={k: h[k] for k in signed})
req.context["timestamp"] = h["x-amz-date"]
auth = SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), "ecs", "us-east-1")
canonical = auth.canonical_request(req)
expected = auth.signature(auth.string_to_sign(req, canonical), req)
print(h["x-amz-target"], "signed", ";".join(signed))
print("match" if ours.endswith("Signature=" + expected) else "MISMATCH ours=%s botocore=%s\n%s" % (ours, expected, canonical))
"#;
    /// Kills the capture server if the test fails before it has answered.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = KillOnDrop(
        std::process::Command::new(testkit::python())
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut out = std::io::BufReader::new(server.0.stdout.take().unwrap());
    let mut port = String::new();
    std::io::BufRead::read_line(&mut out, &mut port).unwrap();
    let endpoint = format!("http://127.0.0.1:{}", port.trim());
    let dir = tempfile::tempdir().unwrap();
    SqliteQueue::open(dir.path().join("queue.sqlite"), 3).unwrap();
    let tick = Command::new(segnode_bin())
        .args(["scaler", "tick", "--data-dir"])
        .arg(dir.path())
        .arg("--state")
        .arg(dir.path().join("state.json"))
        .args(["--endpoint-url", &endpoint, "--region", "us-east-1"])
        .args(["--ecs-cluster", "segnode", "--ecs-service", "workers"])
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        )
        .env_remove("AWS_SESSION_TOKEN")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&tick.stderr);
    assert!(
        stderr.contains("ClientException") && stderr.contains("captured"),
        "the tick must report the server's refusal: {stderr}"
    );
    let mut verdict = String::new();
    std::io::Read::read_to_string(&mut out, &mut verdict).unwrap();
    assert!(
        verdict.contains("AmazonEC2ContainerServiceV20141113.DescribeServices signed"),
        "{verdict}"
    );
    assert!(verdict.trim_end().ends_with("match"), "{verdict}");
}

//! The listener in process: `Scp` bound on 127.0.0.1:0 over a temporary data folder with the
//! local store and the SQLite queue (as `segnode serve` wires them), fed by our own SCU
//! (`dimse::scu::store`) and by dicom-ul's client for what the SCU does not do (C-ECHO, several
//! C-STOREs on one association whatever their statuses). No dcmtk and no binary: the dcmtk
//! suite (`conformance`'s `dcmtk::`, `statuses::`, `resend::`, `malformed::`) stays the
//! black-box proof against a real peer; these check the same promises in seconds.
//!
//! The instances are real Part-10 MR images built here with dicom-object (Explicit VR Little
//! Endian, deterministic pixels), so each test controls exactly what the command announces and
//! what the data set says.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use dicom_core::{dicom_value, DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::client::AsyncClientAssociation;
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, AssociationRJSource, PDataValue, PDataValueType, Pdu,
    PresentationContextResultReason,
};
use dicom_ul::ClientAssociationOptions;
use dimse::command::{parse_store_response, store_request};
use dimse::{AeAddr, AeTitle, ScuError, ScuOptions};
use scp::{AllowedCaller, Scp, ScpConfig, ScpMetrics};
use staging::{Job, JobQueue, LocalStore, ObjectStore, SqliteQueue};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
const VERIFICATION: &str = "1.2.840.10008.1.1";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const STUDY: &str = "1.2.826.0.1.3680043.10.543.1";
const SERIES: &str = "1.2.826.0.1.3680043.10.543.1.1";

/// A listener over `dir` (spool, store, queue, audit trail), as `segnode serve` wires it.
struct Node {
    addr: SocketAddr,
    spool: PathBuf,
    audit: PathBuf,
    store: Arc<LocalStore>,
    queue: Arc<SqliteQueue>,
    metrics: Arc<ScpMetrics>,
    stop: oneshot::Sender<()>,
    served: JoinHandle<()>,
}

impl Node {
    /// `tune` adjusts the configuration; by default the quiet period is long (no job is
    /// emitted while a test runs unless it shortens it) and free disk space is not checked.
    async fn start(dir: &Path, tune: impl FnOnce(&mut ScpConfig)) -> Node {
        let spool = dir.join("spool");
        let audit = dir.join("audit.jsonl");
        let mut config = ScpConfig::new(&spool);
        config.bind = "127.0.0.1:0".parse().unwrap();
        config.quiet_period = Duration::from_secs(600);
        config.drain_time = Duration::ZERO;
        config.min_free_disk_bytes = 0;
        config.audit = audit::AuditLog::open(&audit, None).expect("audit trail");
        tune(&mut config);
        let store = Arc::new(LocalStore::open(dir.join("store")).expect("store"));
        let queue = Arc::new(SqliteQueue::open(dir.join("queue.sqlite"), 3).expect("queue"));
        let scp = Scp::bind(config, store.clone(), queue.clone())
            .await
            .expect("the listener binds");
        let (addr, metrics) = (scp.local_addr(), scp.metrics());
        let (stop, stopped) = oneshot::channel();
        let served = tokio::spawn(scp.serve(async {
            let _ = stopped.await;
        }));
        Node {
            addr,
            spool,
            audit,
            store,
            queue,
            metrics,
            stop,
            served,
        }
    }

    /// Shut down as on SIGTERM (open associations get their 10 s, the journal is materialized).
    async fn stop(self) {
        let _ = self.stop.send(());
        self.served.await.expect("serve returns");
    }

    fn ae(&self) -> AeAddr {
        format!("SEGNODE@{}", self.addr).parse().unwrap()
    }

    /// C-STOREs `objects` on one association from `calling` with our SCU.
    async fn store(&self, calling: &str, objects: &[&[u8]]) -> Result<Vec<u16>, ScuError> {
        let options = ScuOptions {
            calling_ae_title: AeTitle::new(calling).unwrap(),
            timeout: Duration::from_secs(20),
            max_pdu: 16_384,
        };
        dimse::scu::store(objects, &self.ae(), &options, None).await
    }

    fn audit_events(&self) -> Vec<audit::Event> {
        audit::read_records(std::slice::from_ref(&self.audit))
            .expect("audit trail readable")
            .records
            .into_iter()
            .map(|r| r.event)
            .collect()
    }
}

/// A Part-10 MR image whose data set and command agree.
fn instance(sop: &str, size: u16, seed: u32) -> Vec<u8> {
    announced_as(sop, sop, size, seed)
}

/// A Part-10 MR image whose File Meta Information (which our SCU announces in the C-STORE
/// command) names `announced`, while its data set says `sop`.
fn announced_as(sop: &str, announced: &str, size: u16, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let pixels: Vec<u16> = (0..usize::from(size) * usize::from(size))
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((state >> 16) & 0x0FFF) as u16
        })
        .collect();
    let obj = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(MR_IMAGE_STORAGE),
        ),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(sop)),
        DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(STUDY),
        ),
        DataElement::new(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(SERIES),
        ),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("MR")),
        DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("LISTENER1")),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, dicom_value!(U16, [1])),
        DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from("MONOCHROME2"),
        ),
        DataElement::new(tags::ROWS, VR::US, dicom_value!(U16, [size])),
        DataElement::new(tags::COLUMNS, VR::US, dicom_value!(U16, [size])),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, dicom_value!(U16, [16])),
        DataElement::new(tags::BITS_STORED, VR::US, dicom_value!(U16, [12])),
        DataElement::new(tags::HIGH_BIT, VR::US, dicom_value!(U16, [11])),
        DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, dicom_value!(U16, [0])),
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())),
    ]);
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(EXPLICIT_VR_LE)
        .media_storage_sop_class_uid(MR_IMAGE_STORAGE)
        .media_storage_sop_instance_uid(announced)
        .build()
        .expect("file meta");
    let mut out = Vec::new();
    obj.with_exact_meta(meta)
        .write_all(&mut out)
        .expect("write to memory");
    out
}

/// The data set of a Part-10 object: what follows its File Meta Information group.
fn data_set(part10: &[u8]) -> &[u8] {
    assert_eq!(&part10[128..132], b"DICM");
    let group_length = u32::from_le_bytes(part10[140..144].try_into().unwrap()) as usize;
    &part10[144 + group_length..]
}

/// The instances in the spool's study folders (`<study>/<series>/<sop>.dcm`), not its journal,
/// partial receptions or emissions.
fn spooled(spool: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "dcm") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(spool, &mut out);
    out.sort();
    out
}

/// The spooled copy of `sop` once the journal's materializer has written it whole (a first
/// copy is written in place, so a read can catch it half written: it then does not parse).
async fn spooled_copy(spool: &Path, sop: &str) -> Vec<u8> {
    let path = spool.join(STUDY).join(SERIES).join(format!("{sop}.dcm"));
    for _ in 0..200 {
        if let Ok(bytes) = std::fs::read(&path) {
            if bytes.len() > 132 && dicom_object::from_reader(&bytes[128..]).is_ok() {
                return bytes;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never reached its study folder whole", path.display());
}

/// dicom-ul's client, for what our SCU does not do: C-ECHO, and several C-STOREs on one
/// association whatever their statuses.
struct Client {
    assoc: AsyncClientAssociation<TcpStream>,
    message_id: u16,
}

impl Client {
    async fn connect(node: &Node, calling: &str) -> Result<Client, dicom_ul::association::Error> {
        Client::connect_to(node, calling, "SEGNODE").await
    }

    async fn connect_to(
        node: &Node,
        calling: &str,
        called: &str,
    ) -> Result<Client, dicom_ul::association::Error> {
        let assoc = ClientAssociationOptions::new()
            .calling_ae_title(calling.to_string())
            .called_ae_title(called.to_string())
            .with_presentation_context(VERIFICATION, vec![IMPLICIT_VR_LE])
            .with_presentation_context(MR_IMAGE_STORAGE, vec![EXPLICIT_VR_LE])
            .read_timeout(Duration::from_secs(20))
            .establish_async(node.addr)
            .await?;
        Ok(Client {
            assoc,
            message_id: 0,
        })
    }

    fn context(&self, abstract_syntax: &str) -> u8 {
        self.assoc
            .presentation_contexts()
            .iter()
            .find(|pc| {
                pc.reason == PresentationContextResultReason::Acceptance
                    && pc.abstract_syntax.trim_end_matches('\0') == abstract_syntax
            })
            .unwrap_or_else(|| panic!("the listener accepted no context for {abstract_syntax}"))
            .id
    }

    async fn send_command(&mut self, pc_id: u8, command: Vec<u8>) {
        self.assoc
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pc_id,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: command,
                }],
            })
            .await
            .expect("command sent");
    }

    /// The response command set: its status and error comment.
    async fn response(&mut self) -> (u16, Option<String>) {
        let mut command = Vec::new();
        loop {
            match self.assoc.receive().await.expect("a response") {
                Pdu::PData { data } => {
                    let mut last = false;
                    for v in data {
                        assert_eq!(v.value_type, PDataValueType::Command);
                        command.extend_from_slice(&v.data);
                        last |= v.is_last;
                    }
                    if last {
                        break;
                    }
                }
                other => panic!("expected a response, got {other:?}"),
            }
        }
        let rsp = parse_store_response(&command).expect("a readable response");
        (rsp.status, rsp.comment)
    }

    async fn echo(&mut self) -> u16 {
        self.message_id += 1;
        let rq = InMemDicomObject::command_from_element_iter([
            DataElement::new(
                tags::AFFECTED_SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from(format!("{VERIFICATION}\0")),
            ),
            DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [0x0030])),
            DataElement::new(
                tags::MESSAGE_ID,
                VR::US,
                dicom_value!(U16, [self.message_id]),
            ),
            DataElement::new(
                tags::COMMAND_DATA_SET_TYPE,
                VR::US,
                dicom_value!(U16, [0x0101]),
            ),
        ]);
        let mut bytes = Vec::new();
        rq.write_dataset_with_ts(
            &mut bytes,
            TransferSyntaxRegistry.get(IMPLICIT_VR_LE).unwrap(),
        )
        .unwrap();
        let pc = self.context(VERIFICATION);
        self.send_command(pc, bytes).await;
        self.response().await.0
    }

    /// One C-STORE of a Part-10 object (as announced by its File Meta Information).
    async fn store(&mut self, part10: &[u8]) -> (u16, Option<String>) {
        self.message_id += 1;
        let p = dimse::Part10::parse(part10).unwrap();
        let pc = self.context(&p.sop_class_uid);
        let rq = store_request(&p.sop_class_uid, &p.sop_instance_uid, self.message_id);
        self.send_command(pc, rq).await;
        {
            let mut writer = self.assoc.send_pdata(pc);
            writer.write_all(data_set(part10)).await.unwrap();
            writer.finish().await.unwrap();
        }
        self.response().await
    }

    async fn release(self) {
        self.assoc.release().await.expect("released normally");
    }
}

/// The status and error comment of a C-STORE our SCU saw refused.
fn refusal(result: Result<Vec<u16>, ScuError>) -> (u16, String) {
    match result {
        Err(ScuError::Refused {
            status, comment, ..
        }) => (status, comment.unwrap_or_default()),
        other => panic!("expected a refused C-STORE, got {other:?}"),
    }
}

/// Why the listener rejects an association from `calling` to `called` (A-ASSOCIATE-RJ).
async fn rejected(node: &Node, calling: &str, called: &str) -> AssociationRJSource {
    match Client::connect_to(node, calling, called).await {
        Err(dicom_ul::association::Error::Rejected { association_rj, .. }) => association_rj.source,
        Err(e) => panic!("expected an A-ASSOCIATE-RJ, got {e}"),
        Ok(_) => panic!("expected a rejection, the association was accepted"),
    }
}

fn sop(n: u32) -> String {
    format!("1.2.826.0.1.3680043.10.543.1.1.{n}")
}

/// A PACS sends a few instances: each gets 0x0000, each is in the spool as sent (the data set
/// bytes unchanged), survives a restart, and after the quiet period exactly one job lists them,
/// their staged copies in the store being what was sent. Both durable paths: the ingest journal
/// (the default) and one file per instance (`journal_segment_bytes = 0`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_instances_are_durable_and_become_exactly_one_job() {
    for journal_segment_bytes in [16 * 1024 * 1024, 0] {
        let dir = tempfile::tempdir().unwrap();
        let sent: Vec<(String, Vec<u8>)> = (1..=3)
            .map(|n| (sop(n), instance(&sop(n), 64, n)))
            .collect();
        let objects: Vec<&[u8]> = sent.iter().map(|(_, b)| b.as_slice()).collect();

        let node = Node::start(dir.path(), |c| {
            c.journal_segment_bytes = journal_segment_bytes
        })
        .await;
        let statuses = node.store("SCANNER1", &objects).await.expect("stored");
        assert_eq!(statuses, vec![0x0000; 3]);
        for (uid, bytes) in &sent {
            let copy = spooled_copy(&node.spool, uid).await;
            assert_eq!(
                data_set(&copy),
                data_set(bytes),
                "spooled {uid} as received"
            );
        }
        assert_eq!(node.metrics.instances_stored.load(Relaxed), 3);
        let backlog = node.queue.backlog().await.unwrap();
        assert_eq!(backlog.total(), 0, "no job within the quiet period");
        node.stop().await;

        // The same data folder after a restart, now with a short quiet period.
        let node = Node::start(dir.path(), |c| {
            c.journal_segment_bytes = journal_segment_bytes;
            c.quiet_period = Duration::from_millis(300);
        })
        .await;
        let received = node
            .queue
            .receive(10, Duration::from_secs(600), Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(received.len(), 1, "one job for the study");
        let job = Job::from_message(&received[0].body, node.store.as_ref())
            .await
            .expect("a job message");
        assert_eq!(job.study_uid.as_str(), STUDY);
        let mut listed: Vec<String> = job.objects.iter().map(|o| o.sop_uid.to_string()).collect();
        listed.sort();
        assert_eq!(listed, vec![sop(1), sop(2), sop(3)]);
        for o in &job.objects {
            assert_eq!(o.series_uid.as_str(), SERIES);
            let staged = node.store.get(&o.key).await.expect("staged object");
            let (_, bytes) = sent
                .iter()
                .find(|(uid, _)| *uid == o.sop_uid.to_string())
                .unwrap();
            assert_eq!(
                data_set(&staged),
                data_set(bytes),
                "staged {} as received",
                o.key
            );
        }
        // Several quiet periods later there is still only that job (hidden, being worked on).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let backlog = node.queue.backlog().await.unwrap();
        assert_eq!(
            (backlog.visible, backlog.in_flight),
            (0, 1),
            "exactly one job"
        );
        node.stop().await;
    }
}

/// C-ECHO on our own association: 0x0000, counted; an association calling another AE title
/// is rejected ("called AE title not recognised").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_succeeds_and_a_wrong_called_ae_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), |_| {}).await;
    let mut client = Client::connect(&node, "ECHOSCU").await.expect("accepted");
    assert_eq!(client.echo().await, 0x0000);
    assert_eq!(client.echo().await, 0x0000);
    client.release().await;
    assert_eq!(node.metrics.echo_requests.load(Relaxed), 2);
    let source = rejected(&node, "ECHOSCU", "NOTSEGNODE").await;
    assert!(
        matches!(
            source,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CalledAETitleNotRecognized
            )
        ),
        "{source:?}"
    );
    node.stop().await;
}

/// With an allowlist, a calling AE not on it is rejected at association (A-ASSOCIATE-RJ,
/// "calling AE title not recognised"), the refusal is in the audit trail, and nothing it
/// could have sent is stored; a caller on the list is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_not_on_the_allowlist_is_rejected_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), |c| {
        c.allowed_callers = vec!["PACS@127.0.0.1".parse::<AllowedCaller>().unwrap()];
    })
    .await;
    let source = rejected(&node, "INTRUDER", "SEGNODE").await;
    assert!(
        matches!(
            source,
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CallingAETitleNotRecognized
            )
        ),
        "{source:?}"
    );
    // our SCU from the same caller: refused too, with nothing stored
    let object = instance(&sop(1), 64, 1);
    let err = node.store("INTRUDER", &[&object]).await.unwrap_err();
    assert!(matches!(err, ScuError::Association(..)), "{err}");
    assert!(spooled(&node.spool).is_empty());
    assert_eq!(node.metrics.instances_stored.load(Relaxed), 0);
    assert_eq!(node.metrics.associations_rejected_ae.load(Relaxed), 2);
    let rejected: Vec<_> = node
        .audit_events()
        .into_iter()
        .filter_map(|e| match e {
            audit::Event::AssociationRejected { caller, reason, .. } => {
                Some((caller.calling_ae, reason))
            }
            _ => None,
        })
        .collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(
        rejected.iter().all(|(ae, _)| ae == "INTRUDER"),
        "{rejected:?}"
    );
    assert!(rejected[0].1.contains("allowlist"), "{rejected:?}");

    // the caller on the list from its address is accepted and stored
    assert_eq!(node.store("PACS", &[&object]).await.unwrap(), vec![0x0000]);
    spooled_copy(&node.spool, &sop(1)).await;
    node.stop().await;
}

/// A data set whose SOP Instance UID is not the one its C-STORE command announced is refused
/// with 0xA900 (data set does not match), saying why, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_set_that_is_not_the_announced_instance_gets_a900() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), |_| {}).await;
    let object = announced_as(&sop(2), &sop(1), 64, 1);
    let (status, comment) = refusal(node.store("SCANNER1", &[&object]).await);
    assert_eq!(status, 0xA900);
    assert!(comment.contains("SOP Instance UID differs"), "{comment}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(spooled(&node.spool).is_empty());
    assert_eq!(node.metrics.store_failed_mismatch.load(Relaxed), 1);
    assert_eq!(node.metrics.instances_stored.load(Relaxed), 0);
    node.stop().await;
}

/// An object over `max_object_bytes` gets 0xA700 (out of resources) with the reason, is not
/// stored, and the association goes on: the next C-STORE on it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_over_the_size_limit_gets_a700_and_the_association_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), |c| c.max_object_bytes = 64 * 1024).await;
    let big = instance(&sop(1), 256, 1); // 128 KiB of pixels
    let small = instance(&sop(2), 64, 2);
    let mut client = Client::connect(&node, "SCANNER1").await.expect("accepted");
    let (status, comment) = client.store(&big).await;
    assert_eq!(status, 0xA700);
    assert!(
        comment.as_deref().is_some_and(|c| c.contains("byte limit")),
        "{comment:?}"
    );
    assert_eq!(client.store(&small).await, (0x0000, None));
    assert_eq!(client.echo().await, 0x0000);
    client.release().await;
    spooled_copy(&node.spool, &sop(2)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spooled = spooled(&node.spool);
    assert_eq!(spooled.len(), 1, "{spooled:?}");
    assert!(spooled[0].ends_with(format!("{}.dcm", sop(2))));
    assert_eq!(node.metrics.store_failed_out_of_resources.load(Relaxed), 1);
    node.stop().await;
}

/// A PACS retry re-sends an identical instance: 0x0000 again, but it is not staged a second
/// time (counted as identical; the spooled copy is the first one, byte for byte).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_resend_is_acknowledged_and_not_staged_twice() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), |_| {}).await;
    let object = instance(&sop(1), 64, 1);
    assert_eq!(node.store("SCANNER1", &[&object]).await.unwrap(), vec![0]);
    spooled_copy(&node.spool, &sop(1)).await;
    // settled: the materializer has stamped the copy (sender, digest, sequence number); a
    // second staging would stamp it again
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = spooled_copy(&node.spool, &sop(1)).await;
    assert_eq!(node.store("SCANNER1", &[&object]).await.unwrap(), vec![0]);
    // and from another caller: identical bytes are no conflict
    assert_eq!(node.store("PACS2", &[&object]).await.unwrap(), vec![0]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(node.metrics.instances_stored.load(Relaxed), 1);
    assert_eq!(node.metrics.instances_identical.load(Relaxed), 2);
    assert_eq!(spooled(&node.spool).len(), 1);
    assert_eq!(
        spooled_copy(&node.spool, &sop(1)).await,
        first,
        "the first copy kept"
    );
    node.stop().await;
}

/// The same SOP Instance UID with different content from another caller is refused with 0xC000
/// (the provenance policy), the staged copy is kept and the conflict is in the audit trail;
/// from the sender itself the same change is a correction (0x0000, replaces the copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_content_under_a_staged_uid_from_another_caller_gets_c000() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), |_| {}).await;
    let original = instance(&sop(1), 64, 1);
    let other = instance(&sop(1), 64, 2);
    assert_ne!(data_set(&original), data_set(&other));
    assert_eq!(node.store("SCANNER1", &[&original]).await.unwrap(), vec![0]);
    spooled_copy(&node.spool, &sop(1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let staged = spooled_copy(&node.spool, &sop(1)).await;

    let (status, comment) = refusal(node.store("PACS2", &[&other]).await);
    assert_eq!(status, 0xC000);
    assert!(comment.contains("conflict"), "{comment}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        spooled_copy(&node.spool, &sop(1)).await,
        staged,
        "the staged copy kept"
    );
    assert_eq!(node.metrics.instances_conflicting.load(Relaxed), 1);
    let conflicts: Vec<_> = node
        .audit_events()
        .into_iter()
        .filter_map(|e| match e {
            audit::Event::InstanceConflict {
                caller,
                sop_instance_uid,
                staged_by,
                ..
            } => Some((caller.calling_ae, sop_instance_uid, staged_by.calling_ae)),
            _ => None,
        })
        .collect();
    assert_eq!(
        conflicts,
        vec![("PACS2".to_string(), sop(1), "SCANNER1".to_string())]
    );

    // the sender's own correction replaces its copy
    assert_eq!(node.store("SCANNER1", &[&other]).await.unwrap(), vec![0]);
    assert_eq!(node.metrics.instances_corrected.load(Relaxed), 1);
    let mut corrected = Vec::new();
    for _ in 0..100 {
        corrected = spooled_copy(&node.spool, &sop(1)).await;
        if data_set(&corrected) == data_set(&other) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        data_set(&corrected),
        data_set(&other),
        "the correction is staged"
    );
    node.stop().await;
}

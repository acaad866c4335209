//! Counters the SCP keeps for `/metrics`. The binary serves them; this crate only renders text.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct ScpMetrics {
    pub associations_accepted: AtomicU64,
    pub associations_rejected_ae: AtomicU64,
    pub associations_rejected_limit: AtomicU64,
    pub associations_rejected_disk: AtomicU64,
    pub associations_failed: AtomicU64,
    pub associations_active: AtomicU64,
    pub echo_requests: AtomicU64,
    pub instances_stored: AtomicU64,
    pub instance_bytes: AtomicU64,
    pub store_failed_out_of_resources: AtomicU64,
    pub store_failed_mismatch: AtomicU64,
    pub store_failed_cannot_understand: AtomicU64,
    pub store_failed_processing: AtomicU64,
    /// Re-sent instances with the same bytes as the staged copy (acknowledged, not staged again).
    pub instances_identical: AtomicU64,
    /// Re-sent instances with new content from the staged copy's caller (replaced it).
    pub instances_corrected: AtomicU64,
    /// Re-sent instances with other content from another caller (refused, 0xC000).
    pub instances_conflicting: AtomicU64,
    pub jobs_enqueued: AtomicU64,
    pub emit_failures: AtomicU64,
    pub studies_pending: AtomicU64,
    /// Acknowledged bytes in the ingest journal not yet in their study folders (shared with
    /// the journal).
    pub journal_pending_bytes: std::sync::Arc<AtomicU64>,
    /// Acknowledged instances the journal cannot write into their study folder yet (shared
    /// with the journal); their studies are held back, the others go on.
    pub journal_stuck_instances: std::sync::Arc<AtomicU64>,
    /// Journal barriers that did not answer within the barrier timeout.
    pub barrier_timeouts: AtomicU64,
}

impl ScpMetrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self, out: &mut String) {
        let mut line = |name: &str, kind: &str, help: &str, labels: &[(&str, &AtomicU64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (label, v) in labels {
                let _ = writeln!(out, "{name}{label} {}", v.load(Relaxed));
            }
        };
        line(
            "segnode_scp_associations_total",
            "counter",
            "Associations by outcome.",
            &[
                ("{outcome=\"accepted\"}", &self.associations_accepted),
                ("{outcome=\"rejected_ae\"}", &self.associations_rejected_ae),
                (
                    "{outcome=\"rejected_limit\"}",
                    &self.associations_rejected_limit,
                ),
                (
                    "{outcome=\"rejected_disk\"}",
                    &self.associations_rejected_disk,
                ),
                ("{outcome=\"failed\"}", &self.associations_failed),
            ],
        );
        line(
            "segnode_scp_associations_active",
            "gauge",
            "Associations open now.",
            &[("", &self.associations_active)],
        );
        line(
            "segnode_scp_echo_total",
            "counter",
            "C-ECHO requests answered.",
            &[("", &self.echo_requests)],
        );
        line(
            "segnode_scp_instances_stored_total",
            "counter",
            "Instances written durably and acknowledged.",
            &[("", &self.instances_stored)],
        );
        line(
            "segnode_scp_instance_bytes_total",
            "counter",
            "Bytes of acknowledged instances.",
            &[("", &self.instance_bytes)],
        );
        line(
            "segnode_scp_store_failures_total",
            "counter",
            "C-STORE requests answered with a failure status.",
            &[
                ("{status=\"A700\"}", &self.store_failed_out_of_resources),
                ("{status=\"A900\"}", &self.store_failed_mismatch),
                ("{status=\"C000\"}", &self.store_failed_cannot_understand),
                ("{status=\"0110\"}", &self.store_failed_processing),
            ],
        );
        line(
            "segnode_scp_resent_instances_total",
            "counter",
            "C-STOREs of a SOP Instance UID already staged (or emitted within 24 h), by outcome: identical (acknowledged, not staged again), corrected (same caller, new content: replaced), conflict (another caller, other content: refused with 0xC000).",
            &[
                ("{outcome=\"identical\"}", &self.instances_identical),
                ("{outcome=\"corrected\"}", &self.instances_corrected),
                ("{outcome=\"conflict\"}", &self.instances_conflicting),
            ],
        );
        line(
            "segnode_scp_jobs_enqueued_total",
            "counter",
            "Jobs enqueued for complete studies.",
            &[("", &self.jobs_enqueued)],
        );
        line(
            "segnode_scp_emit_failures_total",
            "counter",
            "Failed attempts to stage a study and enqueue its job (retried).",
            &[("", &self.emit_failures)],
        );
        line(
            "segnode_scp_studies_pending",
            "gauge",
            "Studies waiting for their quiet period or for staging.",
            &[("", &self.studies_pending)],
        );
        line(
            "segnode_scp_journal_pending_bytes",
            "gauge",
            "Acknowledged bytes in the ingest journal, not yet written to their study folders.",
            &[("", self.journal_pending_bytes.as_ref())],
        );
        line(
            "segnode_scp_journal_stuck_instances",
            "gauge",
            "Acknowledged instances that cannot be written to their study folder yet (kept in the journal, retried; their studies wait).",
            &[("", self.journal_stuck_instances.as_ref())],
        );
        line(
            "segnode_scp_barrier_timeouts_total",
            "counter",
            "Journal barriers not answered within the barrier timeout (the due studies wait; emissions go on).",
            &[("", &self.barrier_timeouts)],
        );
    }
}

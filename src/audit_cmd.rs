//! `segnode audit`: reads audit logs (`--audit-log` of serve/scp/worker) and answers "who sent
//! study X and where did its result go". The reading and matching live in the `audit` crate.

use std::path::PathBuf;

use anyhow::{Context, Result};
use audit::{read_records, study_trail, Caller, Event, Record};
use clap::Args;
use staging::logsafe::Escaped;

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Audit log files to read (several processes' logs are merged by time).
    #[arg(long = "log", value_name = "FILE", required = true)]
    pub logs: Vec<PathBuf>,
    /// The study to trace (Study Instance UID); without it, one line per study.
    #[arg(long)]
    pub study: Option<String>,
    /// Print the study's records as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: AuditArgs) -> Result<()> {
    let found = read_records(&args.logs).context("reading the audit logs")?;
    if found.unreadable > 0 {
        eprintln!(
            "note: {} unreadable line(s) skipped (torn by a crash, or not an audit record)",
            found.unreadable
        );
    }
    match &args.study {
        Some(uid) => {
            let trail = study_trail(&found.records, uid);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&trail)?);
                return Ok(());
            }
            if trail.records.is_empty() {
                anyhow::bail!("study {} is not in these audit logs", Escaped(uid));
            }
            println!("study {}", Escaped(uid));
            for r in &trail.records {
                println!("  {}", describe(r));
            }
        }
        None => {
            for r in found
                .records
                .iter()
                .filter(|r| matches!(r.event, Event::StudyReceived { .. }))
            {
                let Some(uid) = r.event.study_uid() else {
                    continue;
                };
                let trail = study_trail(&found.records, uid);
                let delivered = match trail.deliveries.last() {
                    Some((dest, status)) => format!("{} -> {}", Escaped(dest), Escaped(status)),
                    None => "not delivered".into(),
                };
                println!(
                    "{} {} from {} ; {}",
                    r.ts,
                    Escaped(uid),
                    senders(&trail.senders),
                    delivered
                );
            }
        }
    }
    Ok(())
}

fn caller(c: &Caller) -> String {
    let mut s = format!("{} at {}", Escaped(&c.calling_ae), Escaped(&c.peer));
    if let Some(subject) = &c.tls_subject {
        s.push_str(&format!(" (TLS {})", Escaped(subject)));
    }
    s
}

fn senders(callers: &[Caller]) -> String {
    let all: Vec<String> = callers.iter().map(caller).collect();
    if all.is_empty() {
        "(unknown)".into()
    } else {
        all.join(", ")
    }
}

fn describe(r: &Record) -> String {
    let node = r
        .node
        .as_deref()
        .map(|n| format!(" [{}]", Escaped(n)))
        .unwrap_or_default();
    let what = match &r.event {
        Event::StudyReceived {
            instances,
            bytes,
            callers,
            job_id,
            ..
        } => format!(
            "received   {instances} instances, {:.1} MB from {}{}",
            *bytes as f64 / 1e6,
            senders(callers),
            job_id
                .as_deref()
                .map(|j| format!(", job {}", Escaped(j)))
                .unwrap_or_default()
        ),
        Event::JobDone {
            job_id,
            result_uid,
            seconds,
            ..
        } => format!(
            "job done   {} in {seconds:.1} s, result {}",
            Escaped(job_id),
            Escaped(result_uid.as_deref().unwrap_or("-"))
        ),
        Event::JobDeadLettered { job_id, reason, .. } => {
            format!("dead-letter {}: {}", Escaped(job_id), Escaped(reason))
        }
        Event::ResultDelivered {
            destination,
            status,
            ..
        } => format!(
            "delivered  to {}: {}",
            Escaped(destination),
            Escaped(status)
        ),
        Event::InstanceConflict {
            caller: who,
            sop_instance_uid,
            staged_by,
            ..
        } => format!(
            "refused    instance {} from {}: a different copy from {} is staged",
            Escaped(sop_instance_uid),
            caller(who),
            caller(staged_by)
        ),
        other => format!("{other:?}"),
    };
    format!("{} {what}{node}", r.ts)
}

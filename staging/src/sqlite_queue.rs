//! `JobQueue` on an SQLite file: the embedded default. Several processes may share the file
//! (WAL mode); every state change is one transaction with synchronous=FULL, so an enqueued
//! job survives a power cut.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::Notify;

use crate::queue::{Backlog, DeadLetter, JobQueue, QueueError, Receipt, Received, Sent};

/// A message as `peek` shows it.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub message_id: String,
    pub body: String,
    pub receive_count: u32,
    pub in_flight: bool,
}

#[derive(Debug, Clone)]
pub struct SqliteQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
    max_receives: u32,
    dedup_window: Duration,
    /// Wakes long-polling receivers in this process as soon as a message is sent.
    sent: Notify,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl SqliteQueue {
    pub fn open(path: impl AsRef<Path>, max_receives: u32) -> Result<Self, QueueError> {
        let path = path.as_ref().to_path_buf();
        let err = |e: rusqlite::Error| QueueError::Sqlite {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| QueueError::Sqlite {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        }
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS messages (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 message_id TEXT NOT NULL UNIQUE,
                 body TEXT NOT NULL,
                 sent_at_ms INTEGER NOT NULL,
                 visible_at_ms INTEGER NOT NULL,
                 receive_count INTEGER NOT NULL DEFAULT 0,
                 receipt TEXT
             );
             CREATE INDEX IF NOT EXISTS messages_visible ON messages(visible_at_ms);
             CREATE TABLE IF NOT EXISTS dedup (
                 dedup_id TEXT PRIMARY KEY,
                 at_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS dead_letters (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 message_id TEXT NOT NULL,
                 body TEXT NOT NULL,
                 receive_count INTEGER NOT NULL,
                 reason TEXT NOT NULL,
                 dead_at_ms INTEGER NOT NULL
             );",
        )
        .map_err(err)?;
        Ok(SqliteQueue {
            inner: Arc::new(Inner {
                path,
                conn: Mutex::new(conn),
                max_receives: max_receives.max(1),
                dedup_window: Duration::from_secs(24 * 3600),
                sent: Notify::new(),
            }),
        })
    }

    /// Every message now on the queue (visible or in flight), oldest first, without
    /// receiving it: for operators and tests.
    pub fn peek(&self) -> Result<Vec<QueuedMessage>, QueueError> {
        let conn = self.inner.conn.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        let run = || -> rusqlite::Result<Vec<QueuedMessage>> {
            let mut stmt = conn.prepare(
                "SELECT message_id, body, receive_count, visible_at_ms FROM messages ORDER BY seq",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(QueuedMessage {
                    message_id: r.get(0)?,
                    body: r.get(1)?,
                    receive_count: r.get(2)?,
                    in_flight: r.get::<_, i64>(3)? > now,
                })
            })?;
            rows.collect()
        };
        run().map_err(|e| QueueError::Sqlite {
            path: self.inner.path.display().to_string(),
            message: e.to_string(),
        })
    }

    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &Inner) -> rusqlite::Result<Result<T, QueueError>>
            + Send
            + 'static,
    ) -> Result<T, QueueError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            match f(&mut conn, &inner) {
                Ok(r) => r,
                Err(e) => Err(QueueError::Sqlite {
                    path: inner.path.display().to_string(),
                    message: e.to_string(),
                }),
            }
        })
        .await
        .expect("queue task panicked")
    }

    fn receive_now(
        conn: &mut Connection,
        inner: &Inner,
        max: usize,
        visibility: Duration,
    ) -> rusqlite::Result<Vec<Received>> {
        let now = now_ms();
        let tx = conn.transaction()?;
        // A message received max_receives times that is visible again was never deleted: its
        // workers crashed or kept failing. Move it aside, as SQS's redrive policy does.
        tx.execute(
            "INSERT INTO dead_letters (message_id, body, receive_count, reason, dead_at_ms)
             SELECT message_id, body, receive_count, 'received ' || receive_count || ' times without being completed', ?1
             FROM messages WHERE visible_at_ms <= ?1 AND receive_count >= ?2",
            params![now, inner.max_receives],
        )?;
        tx.execute(
            "DELETE FROM messages WHERE visible_at_ms <= ?1 AND receive_count >= ?2",
            params![now, inner.max_receives],
        )?;
        let rows: Vec<(i64, String, String, u32)> = {
            let mut stmt = tx.prepare(
                "SELECT seq, message_id, body, receive_count FROM messages WHERE visible_at_ms <= ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now, max as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (seq, message_id, body, count) in rows {
            let receipt = uuid::Uuid::new_v4().to_string();
            tx.execute(
                "UPDATE messages SET receipt = ?1, receive_count = receive_count + 1, visible_at_ms = ?2 WHERE seq = ?3",
                params![receipt, now + visibility.as_millis() as i64, seq],
            )?;
            out.push(Received {
                message_id,
                receipt: Receipt(receipt),
                body,
                receive_count: count + 1,
            });
        }
        tx.commit()?;
        Ok(out)
    }
}

fn stale(receipt: &Receipt) -> QueueError {
    QueueError::StaleReceipt(receipt.0.clone())
}

#[async_trait]
impl JobQueue for SqliteQueue {
    async fn send(&self, body: &str, dedup_id: Option<&str>) -> Result<(), QueueError> {
        self.send_checked(body, dedup_id).await.map(|_| ())
    }

    async fn send_checked(&self, body: &str, dedup_id: Option<&str>) -> Result<Sent, QueueError> {
        let body = body.to_string();
        let dedup_id = dedup_id.map(str::to_string);
        let sent = self.with_conn(move |conn, inner| {
            let now = now_ms();
            let tx = conn.transaction()?;
            if let Some(id) = &dedup_id {
                tx.execute("DELETE FROM dedup WHERE at_ms < ?1", params![now - inner.dedup_window.as_millis() as i64])?;
                let fresh = tx.execute("INSERT OR IGNORE INTO dedup (dedup_id, at_ms) VALUES (?1, ?2)", params![id, now])?;
                if fresh == 0 {
                    return Ok(Ok(Sent::Duplicate));
                }
            }
            tx.execute(
                "INSERT INTO messages (message_id, body, sent_at_ms, visible_at_ms) VALUES (?1, ?2, ?3, ?3)",
                params![uuid::Uuid::new_v4().to_string(), body, now],
            )?;
            tx.commit()?;
            Ok(Ok(Sent::Accepted))
        })
        .await?;
        if sent == Sent::Accepted {
            self.inner.sent.notify_waiters();
        }
        Ok(sent)
    }

    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.inner.sent.notified();
            let got = self
                .with_conn(move |conn, inner| {
                    Self::receive_now(conn, inner, max, visibility).map(Ok)
                })
                .await?;
            let left = deadline.saturating_duration_since(Instant::now());
            if !got.is_empty() || left.is_zero() {
                return Ok(got);
            }
            // Another process may send too, so poll as well as listen.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(250)), notified).await;
        }
    }

    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError> {
        let r = receipt.clone();
        self.with_conn(move |conn, _| {
            let n = conn.execute(
                "UPDATE messages SET visible_at_ms = ?1 WHERE receipt = ?2",
                params![now_ms() + visibility.as_millis() as i64, r.0],
            )?;
            Ok(if n == 1 { Ok(()) } else { Err(stale(&r)) })
        })
        .await
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), QueueError> {
        let r = receipt.clone();
        self.with_conn(move |conn, _| {
            let n = conn.execute("DELETE FROM messages WHERE receipt = ?1", params![r.0])?;
            Ok(if n == 1 { Ok(()) } else { Err(stale(&r)) })
        })
        .await
    }

    async fn release(&self, receipt: &Receipt, delay: Duration) -> Result<(), QueueError> {
        let r = receipt.clone();
        let res = self
            .with_conn(move |conn, _| {
                let n = conn.execute(
                    "UPDATE messages SET visible_at_ms = ?1, receipt = NULL WHERE receipt = ?2",
                    params![now_ms() + delay.as_millis() as i64, r.0],
                )?;
                Ok(if n == 1 { Ok(()) } else { Err(stale(&r)) })
            })
            .await;
        self.inner.sent.notify_waiters();
        res
    }

    async fn dead_letter(&self, message: &Received, reason: &str) -> Result<(), QueueError> {
        let (r, reason) = (message.receipt.clone(), reason.to_string());
        self.with_conn(move |conn, _| {
            let tx = conn.transaction()?;
            let row: Option<(String, String, u32)> = tx
                .query_row("SELECT message_id, body, receive_count FROM messages WHERE receipt = ?1", params![r.0], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()?;
            let Some((id, body, count)) = row else { return Ok(Err(stale(&r))) };
            tx.execute(
                "INSERT INTO dead_letters (message_id, body, receive_count, reason, dead_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, body, count, reason, now_ms()],
            )?;
            tx.execute("DELETE FROM messages WHERE receipt = ?1", params![r.0])?;
            tx.commit()?;
            Ok(Ok(()))
        })
        .await
    }

    async fn backlog(&self) -> Result<Backlog, QueueError> {
        self.with_conn(|conn, _| {
            let now = now_ms();
            let (visible, in_flight): (i64, i64) = conn.query_row(
                "SELECT COALESCE(SUM(visible_at_ms <= ?1), 0), COALESCE(SUM(visible_at_ms > ?1), 0) FROM messages",
                params![now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(Ok(Backlog { visible: visible as u64, in_flight: in_flight as u64 }))
        })
        .await
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.with_conn(move |conn, _| {
            let mut stmt =
                conn.prepare("SELECT message_id, body, receive_count, reason FROM dead_letters ORDER BY seq LIMIT ?1")?;
            let rows = stmt.query_map(params![max as i64], |r| {
                Ok(DeadLetter { message_id: r.get(0)?, body: r.get(1)?, receive_count: r.get(2)?, reason: r.get(3)? })
            })?;
            Ok(Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?))
        })
        .await
    }

    fn max_receives(&self) -> u32 {
        self.inner.max_receives
    }

    fn location(&self) -> String {
        format!("sqlite://{}", self.inner.path.display())
    }
}

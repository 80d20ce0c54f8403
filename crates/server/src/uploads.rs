//! Label tables uploaded with Flight DoPut, kept in memory by name, each until it expires
//! (`--upload-ttl`). Bounded while they stream in: bytes and rows per upload
//! (`--max-upload-bytes`, `--max-upload-rows`), bytes of every table kept or arriving
//! (`--max-uploads-total-bytes`) and the number of tables (`--max-uploads`). An upload over a
//! limit is refused as soon as it crosses it, not after it has all arrived.
//!
//! With `--upload-dir` (replicas sharing it), each table is also stored there
//! (`quiver_offline::SharedUploads`, named by a hash of the caller and the name), so any
//! replica finds it: one that does not hold it in memory loads it, within the same bounds,
//! while it is younger than `--upload-ttl`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;

use crate::bounded::{BoundedMap, Bounds};
use crate::error::{Error, Result};
use crate::limits::{Limits, check};

#[derive(Debug)]
struct Upload {
    batches: Vec<RecordBatch>,
    /// The shared copy's version (shared uploads): the one held here.
    version: Option<String>,
    /// Released (from the total) when the table is dropped: expired or replaced.
    _reservation: Reservation,
}

/// Bytes of every upload kept or in progress.
#[derive(Debug)]
struct Budget {
    used: Mutex<u64>,
    total: u64,
}

/// One upload's share of the total upload bytes, given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: AtomicU64,
    rows: AtomicU64,
    max_bytes: u64,
    max_rows: u64,
}

impl Reservation {
    /// Counts `bytes` more of this upload: refused over the per-upload or the total limit.
    pub fn add_bytes(&self, bytes: u64) -> Result<()> {
        let mine = self.bytes.load(Ordering::Relaxed) + bytes;
        check(
            "the upload",
            mine,
            "bytes",
            self.max_bytes,
            "--max-upload-bytes",
        )?;
        let mut used = self
            .budget
            .used
            .lock()
            .map_err(|_| Error::Internal("upload budget poisoned".into()))?;
        check(
            "the label tables kept and arriving",
            *used + bytes,
            "bytes",
            self.budget.total,
            "--max-uploads-total-bytes",
        )?;
        *used += bytes;
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Counts `rows` more of this upload: refused over the per-upload limit.
    pub fn add_rows(&self, rows: u64) -> Result<()> {
        let mine = self.rows.load(Ordering::Relaxed) + rows;
        check(
            "the upload",
            mine,
            "rows",
            self.max_rows,
            "--max-upload-rows",
        )?;
        self.rows.fetch_add(rows, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let bytes = *self.bytes.get_mut();
        if let Ok(mut used) = self.budget.used.lock() {
            *used = used.saturating_sub(bytes);
        }
    }
}

#[derive(Debug)]
pub struct Uploads {
    tables: BoundedMap<Arc<Upload>>,
    budget: Arc<Budget>,
    max_bytes: u64,
    max_rows: u64,
    /// Where every replica finds the tables (`--upload-dir`), if replicas share them.
    shared: Option<Arc<quiver_offline::SharedUploads>>,
    ttl: std::time::Duration,
    /// When the shared tables past their time to live were last swept.
    swept: Mutex<Option<std::time::Instant>>,
}

impl Uploads {
    pub fn new(limits: &Limits) -> Self {
        Uploads {
            tables: BoundedMap::new(Bounds {
                capacity: limits.max_uploads,
                ttl: limits.upload_ttl,
                what: "uploaded label tables",
                capacity_setting: "--max-uploads",
                ttl_setting: "--upload-ttl",
            }),
            budget: Arc::new(Budget {
                used: Mutex::new(0),
                total: limits.max_uploads_total_bytes,
            }),
            max_bytes: limits.max_upload_bytes,
            max_rows: limits.max_upload_rows,
            shared: None,
            ttl: limits.upload_ttl,
            swept: Mutex::new(None),
        }
    }

    /// Uploads also stored in `shared`, for every replica.
    pub fn with_shared(mut self, shared: quiver_offline::SharedUploads) -> Self {
        self.shared = Some(Arc::new(shared));
        self
    }

    /// Starts accounting one upload.
    pub fn reserve(&self) -> Reservation {
        Reservation {
            budget: Arc::clone(&self.budget),
            bytes: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            max_bytes: self.max_bytes,
            max_rows: self.max_rows,
        }
    }

    /// Keeps an upload's table under `name` (replacing a table of that name); with shared
    /// uploads, stores it there too before answering (and sweeps expired ones hourly).
    pub async fn put(
        &self,
        name: String,
        batches: Vec<RecordBatch>,
        reservation: Reservation,
    ) -> Result<()> {
        let mut version = None;
        if let Some(shared) = &self.shared {
            let (shared, id, stored) = (Arc::clone(shared), shared_id(&name), batches.clone());
            let sweep = self.sweep_due().then_some(self.ttl);
            version = crate::run_blocking(move || {
                shared.put(&id, &stored)?;
                if let Some(ttl) = sweep {
                    let removed = shared.sweep(ttl)?;
                    tracing::debug!(removed, "swept shared uploads past --upload-ttl");
                }
                Ok(shared.version(&id)?)
            })
            .await?;
        }
        let upload = Upload {
            batches,
            version,
            _reservation: reservation,
        };
        self.tables.insert(name, Arc::new(upload))
    }

    /// The table uploaded under `name`: from memory, else (shared uploads) from where every
    /// replica stores them, kept in memory from then on. With shared uploads, the copy in
    /// memory serves only while it is the stored version (a replica may have replaced it).
    pub async fn get(&self, name: &str) -> Result<Vec<RecordBatch>> {
        let held = self.tables.get(name)?;
        let missing = || Error::NotFound {
            what: "uploaded label table (uploads expire after --upload-ttl)",
            name: name.to_string(),
        };
        let Some(shared) = &self.shared else {
            return held
                .map(|upload| upload.batches.clone())
                .ok_or_else(missing);
        };
        let (shared, id, ttl) = (Arc::clone(shared), shared_id(name), self.ttl);
        if let Some(upload) = held {
            let (shared, id) = (Arc::clone(&shared), id.clone());
            let current = crate::run_blocking(move || Ok(shared.version(&id)?)).await?;
            if current.is_some() && current == upload.version {
                return Ok(upload.batches.clone());
            }
        }
        let Some((batches, version)) =
            crate::run_blocking(move || Ok(shared.get(&id, ttl)?)).await?
        else {
            return Err(missing());
        };
        let reservation = self.reserve();
        for batch in &batches {
            reservation.add_bytes(batch.get_array_memory_size() as u64)?;
            reservation.add_rows(batch.num_rows() as u64)?;
        }
        let upload = Upload {
            batches: batches.clone(),
            version: Some(version),
            _reservation: reservation,
        };
        self.tables.insert(name.to_string(), Arc::new(upload))?;
        Ok(batches)
    }

    /// Whether an hour passed since the last sweep of the shared tables (and so one is due
    /// now).
    fn sweep_due(&self) -> bool {
        let mut swept = self.swept.lock().unwrap_or_else(|p| p.into_inner());
        let due = swept.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(3600));
        if due {
            *swept = Some(std::time::Instant::now());
        }
        due
    }
}

/// The shared file name of an upload: a hash of its key (the caller and the name), so no
/// name can reach outside the directory or another caller's table.
fn shared_id(key: &str) -> String {
    use sha2::Digest;
    quiver_core::fingerprint::hex(&sha2::Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_are_given_back_when_an_upload_is_dropped() -> Result<()> {
        let uploads = Uploads::new(&Limits {
            max_upload_bytes: 100,
            max_uploads_total_bytes: 150,
            ..Limits::default()
        });
        let first = uploads.reserve();
        first.add_bytes(100)?;
        let over_one = first.add_bytes(1).err().map(|e| e.to_string());
        assert!(over_one.is_some_and(|m| m.contains("--max-upload-bytes")));
        let second = uploads.reserve();
        let over_all = second.add_bytes(60).err().map(|e| e.to_string());
        assert!(over_all.is_some_and(|m| m.contains("--max-uploads-total-bytes")));
        uploads.put("a".into(), Vec::new(), first).await?;
        second.add_bytes(50)?;
        drop(second);
        // Replacing `a` drops its table and its bytes.
        let third = uploads.reserve();
        third.add_bytes(50)?;
        uploads.put("a".into(), Vec::new(), third).await?;
        let fourth = uploads.reserve();
        fourth.add_bytes(100)?;
        Ok(())
    }
}

//! Label tables uploaded with Flight DoPut, kept in memory by name, each until it expires
//! (`--upload-ttl`). Bounded while they stream in: bytes and rows per upload
//! (`--max-upload-bytes`, `--max-upload-rows`), bytes of every table kept or arriving
//! (`--max-uploads-total-bytes`) and the number of tables (`--max-uploads`). An upload over a
//! limit is refused as soon as it crosses it, not after it has all arrived.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;

use crate::bounded::{BoundedMap, Bounds};
use crate::error::{Error, Result};
use crate::limits::{Limits, check};

#[derive(Debug)]
struct Upload {
    batches: Vec<RecordBatch>,
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
        }
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

    /// Keeps an upload's table under `name` (replacing a table of that name).
    pub fn put(
        &self,
        name: String,
        batches: Vec<RecordBatch>,
        reservation: Reservation,
    ) -> Result<()> {
        let upload = Upload {
            batches,
            _reservation: reservation,
        };
        self.tables.insert(name, Arc::new(upload))
    }

    pub fn get(&self, name: &str) -> Result<Vec<RecordBatch>> {
        let upload = self.tables.get(name)?.ok_or_else(|| Error::NotFound {
            what: "uploaded label table (uploads expire after --upload-ttl)",
            name: name.to_string(),
        })?;
        Ok(upload.batches.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_given_back_when_an_upload_is_dropped() -> Result<()> {
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
        uploads.put("a".into(), Vec::new(), first)?;
        second.add_bytes(50)?;
        drop(second);
        // Replacing `a` drops its table and its bytes.
        let third = uploads.reserve();
        third.add_bytes(50)?;
        uploads.put("a".into(), Vec::new(), third)?;
        let fourth = uploads.reserve();
        fourth.add_bytes(100)?;
        Ok(())
    }
}

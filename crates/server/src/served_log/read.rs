//! ReadServedLog: a service's logged rows in a window as one Arrow IPC stream, cut into
//! messages as it is written (schema first, then a message per batch), from the blocking pool.

use std::sync::Arc;

use arrow::datatypes::Schema;
use arrow::ipc::writer::StreamWriter;
use tokio::sync::mpsc;

use super::ServedLog;
use crate::error::{Error, Result};

/// Messages buffered between the reading thread and the response stream.
const BUFFERED: usize = 4;

impl ServedLog {
    /// The rows of `service` served in `[start, end)` (of `version` only, unless 0) as Arrow
    /// IPC chunks; concatenated in order they are one IPC stream. The service's queued rows
    /// are flushed first, so the stream includes every row logged before the call.
    pub(crate) fn read_ipc(
        self: &Arc<Self>,
        service: String,
        (start, end): (i64, i64),
        version: u32,
    ) -> Result<mpsc::Receiver<Result<Vec<u8>>>> {
        if service.is_empty() {
            return Err(Error::invalid(
                "feature_service",
                "name the feature service whose log to read",
            ));
        }
        if start >= end {
            return Err(Error::invalid(
                "start_micros",
                "the window is empty; give start < end",
            ));
        }
        let (sender, receiver) = mpsc::channel(BUFFERED);
        let log = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let result = log.stream_ipc(&service, (start, end), version, &sender);
            if let Err(error) = result {
                // The client may have gone; then nobody needs the error either.
                let _ = sender.blocking_send(Err(error));
            }
        });
        Ok(receiver)
    }

    fn stream_ipc(
        &self,
        service: &str,
        range: (i64, i64),
        version: u32,
        sender: &mpsc::Sender<Result<Vec<u8>>>,
    ) -> Result<()> {
        self.flush(service)?;
        let dir = self.dir();
        let version = (version > 0).then_some(version);
        let files = dir.files(service, range, version)?;
        let schema = match files.is_empty() {
            true => Arc::new(Schema::empty()),
            false => dir.schema(&files)?,
        };
        let ipc = |e: arrow::error::ArrowError| Error::Internal(format!("Arrow IPC: {e}"));
        let mut writer = StreamWriter::try_new(Vec::new(), &schema).map_err(ipc)?;
        let send = |writer: &mut StreamWriter<Vec<u8>>| {
            let chunk = std::mem::take(writer.get_mut());
            sender.blocking_send(Ok(chunk)).is_ok()
        };
        if !send(&mut writer) {
            return Ok(());
        }
        dir.read(&files, &schema, range, version, &mut |batch| {
            writer.write(&batch).map_err(quiver_offline::Error::from)?;
            Ok(send(&mut writer))
        })?;
        writer.finish().map_err(ipc)?;
        send(&mut writer);
        Ok(())
    }
}

//! Log streaming from files that a runtime appends to (VM consoles, WASM stdout/stderr).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::{ExecutorError, LogChunk, LogOptions, LogSource, LogStream};

/// How often a followed file is polled for new bytes.
const POLL: Duration = Duration::from_millis(25);

/// Tells a followed log whether its writer has finished.
pub type DoneProbe = Arc<dyn Fn() -> bool + Send + Sync>;

struct Tail {
    file: Option<tokio::fs::File>,
    path: PathBuf,
    source: LogSource,
    options: LogOptions,
    done: DoneProbe,
    finished: bool,
}

/// Streams `path` as `source` chunks. Without `follow` the stream ends at the current end of
/// file; with `follow` it waits for more until `done()` says the writer has exited, then
/// delivers what is left and ends. A missing file is treated as empty until it appears.
pub fn file_stream(
    path: PathBuf,
    source: LogSource,
    options: LogOptions,
    done: DoneProbe,
) -> LogStream {
    let tail = Tail {
        file: None,
        path,
        source,
        options,
        done,
        finished: false,
    };
    Box::pin(futures::stream::unfold(tail, |mut t| async move {
        if t.finished {
            return None;
        }
        match next_chunk(&mut t).await {
            Ok(Some(chunk)) => Some((Ok(chunk), t)),
            Ok(None) => None,
            Err(e) => {
                t.finished = true;
                Some((Err(e), t))
            }
        }
    }))
}

async fn open(t: &mut Tail) -> Result<bool, ExecutorError> {
    if t.file.is_some() {
        return Ok(true);
    }
    match tokio::fs::File::open(&t.path).await {
        Ok(mut f) => {
            if t.options.skip_history {
                f.seek(std::io::SeekFrom::End(0)).await?;
            }
            t.file = Some(f);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ExecutorError::File {
            path: t.path.clone(),
            source: e,
        }),
    }
}

async fn next_chunk(t: &mut Tail) -> Result<Option<LogChunk>, ExecutorError> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Read `done` before reading the file: if the writer had finished then, everything it
        // wrote is already in the file and an empty read really is the end.
        let writer_done = (t.done)();
        if open(t).await?
            && let Some(f) = t.file.as_mut()
        {
            let n = f.read(&mut buf).await?;
            if n > 0 {
                buf.truncate(n);
                return Ok(Some(LogChunk {
                    source: t.source,
                    data: Bytes::from(buf),
                }));
            }
        }
        if !t.options.follow || writer_done {
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Collects a whole (non-follow or finite) log stream into one byte vector; convenient for
/// callers that want the text.
pub async fn collect(mut stream: LogStream) -> crate::Result<Vec<u8>> {
    use futures::StreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?.data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn history_then_follow_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"first\n").unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let d2 = done.clone();
        let probe: DoneProbe = Arc::new(move || d2.load(Ordering::SeqCst));
        let follow = LogOptions {
            follow: true,
            skip_history: false,
        };
        let s = file_stream(path.clone(), LogSource::Console, follow, probe.clone());
        let new_only = file_stream(
            path.clone(),
            LogSource::Console,
            LogOptions {
                follow: true,
                skip_history: true,
            },
            probe,
        );
        let reader = tokio::spawn(collect(s));
        let reader2 = tokio::spawn(collect(new_only));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"second\n").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        done.store(true, Ordering::SeqCst);
        assert_eq!(reader.await.unwrap().unwrap(), b"first\nsecond\n");
        assert_eq!(reader2.await.unwrap().unwrap(), b"second\n");
        // Without follow: the history only, even though the writer is "running".
        let s = file_stream(
            path,
            LogSource::Console,
            LogOptions::default(),
            Arc::new(|| false),
        );
        assert_eq!(collect(s).await.unwrap(), b"first\nsecond\n");
    }
}

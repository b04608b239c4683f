//! `wsgi.file_wrapper`: lets an app hand a file to the server, which then reads it in Rust
//! without holding the GIL. Without a real file descriptor it is a plain block iterator.

use std::fs::File;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::fs::FileExt;

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

#[pyclass(frozen, module = "wharf")]
pub(crate) struct FileWrapper {
    filelike: Py<PyAny>,
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: Py<PyAny>, blksize: isize) -> Self {
        let blksize = usize::try_from(blksize).ok().filter(|&b| b > 0).unwrap_or(8192);
        FileWrapper { filelike, blksize }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let block = self.filelike.bind(py).call_method1("read", (self.blksize,))?;
        if block.is_truthy()? { Ok(block) } else { Err(PyStopIteration::new_err(())) }
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let filelike = self.filelike.bind(py);
        if filelike.hasattr("close")? {
            filelike.call_method0("close")?;
        }
        Ok(())
    }
}

/// A regular file to send from `offset`, read without the GIL.
pub(crate) struct FileSource {
    pub(crate) file: File,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) blksize: usize,
}

impl FileWrapper {
    /// The file behind the wrapper, when it is a regular file with a descriptor; `None` means
    /// "iterate it like any other iterable".
    pub(crate) fn file_source(&self, py: Python<'_>) -> Option<FileSource> {
        let filelike = self.filelike.bind(py);
        let fd: RawFd = filelike.call_method0("fileno").ok()?.extract().ok()?;
        if fd < 0 {
            return None;
        }
        // Reads continue from the Python file's position, as if the app had iterated it.
        let offset: u64 = filelike.call_method0("tell").ok()?.extract().ok()?;
        // SAFETY: the descriptor belongs to `filelike`, which stays alive (and open) until the
        // response is finished and `close()` is called; we only duplicate it here.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let file = File::from(borrowed.try_clone_to_owned().ok()?);
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        let len = meta.len().saturating_sub(offset);
        Some(FileSource { file, offset, len, blksize: self.blksize.max(64 * 1024) })
    }
}

impl FileSource {
    /// Reads the next block at the current offset (positional read: the Python file object's
    /// own position is not disturbed).
    pub(crate) fn read_block(&mut self, remaining: u64) -> std::io::Result<Vec<u8>> {
        let want = usize::try_from(remaining.min(self.blksize as u64)).unwrap_or(self.blksize);
        let mut buf = vec![0; want];
        let n = self.file.read_at(&mut buf, self.offset)?;
        buf.truncate(n);
        self.offset += n as u64;
        Ok(buf)
    }
}

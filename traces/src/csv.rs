//! PLACEHOLDER (being written by a helper).
use crate::error::TraceError;
use moonlab_core::Request;
use std::io::BufRead;
use std::path::{Path, PathBuf};
pub struct AzureReader<R> { _input: R, path: PathBuf, done: bool }
impl<R: BufRead> AzureReader<R> {
    pub fn new(input: R, path: &Path, _check_order: bool) -> Self { AzureReader { _input: input, path: path.to_path_buf(), done: false } }
}
impl<R: BufRead> Iterator for AzureReader<R> {
    type Item = Result<Request, TraceError>;
    fn next(&mut self) -> Option<Self::Item> { if self.done { return None; } self.done = true; Some(Err(TraceError::file(&self.path, "azure reader pending"))) }
}
pub type BurstGptReader<R> = AzureReader<R>;

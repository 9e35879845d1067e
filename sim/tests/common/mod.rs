//! Helpers shared by the simulator's integration tests.

use moonlab_core::Request;

/// The first `n` requests of a bundled trace (`traces/data/<name>`).
pub fn bundled(name: &str, n: usize) -> Vec<Request> {
    let path = format!("{}/../traces/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let (_, mut reqs) =
        moonlab_traces::read_all(std::path::Path::new(&path), &Default::default()).unwrap();
    reqs.truncate(n);
    reqs
}

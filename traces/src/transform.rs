//! Trace transformations: a time window, the first N requests, and rate
//! scaling by compressing timestamps (`moonlab trace slice`).

use moonlab_core::{Nanos, Request};

/// What to keep and how to retime it. Times are relative to the trace's
/// own clock (its timestamps), not to its first request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Slice {
    /// Keep requests arriving at or after this time.
    pub from: Option<Nanos>,
    /// Keep requests arriving strictly before this time.
    pub to: Option<Nanos>,
    /// Keep at most this many requests (after the window).
    pub first: Option<u64>,
    /// Divide every timestamp by this factor (> 1 compresses: a higher rate).
    pub rate_scale: Option<f64>,
    /// Shift timestamps so the first kept request arrives at 0.
    pub rebase: bool,
}

impl Slice {
    /// Applies the slice to a stream in arrival order; stops reading as soon
    /// as nothing more can be kept.
    pub fn apply<E>(
        &self,
        requests: impl IntoIterator<Item = Result<Request, E>>,
        mut emit: impl FnMut(Request) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut kept = 0u64;
        let mut base: Option<Nanos> = None;
        for r in requests {
            let mut r = r?;
            if self.first.is_some_and(|n| kept >= n) {
                break;
            }
            if self.from.is_some_and(|f| r.arrival < f) {
                continue;
            }
            if self.to.is_some_and(|t| r.arrival >= t) {
                break;
            }
            let origin = if self.rebase {
                *base.get_or_insert(r.arrival)
            } else {
                Nanos::ZERO
            };
            let t = r.arrival.saturating_sub(origin).0 as f64;
            let t = match self.rate_scale {
                Some(k) => t / k,
                None => t,
            };
            r.arrival = Nanos(t.round() as u64);
            emit(r)?;
            kept += 1;
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reqs(ms: &[u64]) -> Vec<Result<Request, ()>> {
        ms.iter()
            .map(|&t| {
                Ok(Request {
                    arrival: Nanos::from_millis(t),
                    input_tokens: 1,
                    output_tokens: 1,
                    blocks: vec![],
                })
            })
            .collect()
    }

    fn run(s: &Slice, ms: &[u64]) -> Vec<u64> {
        let mut out = vec![];
        s.apply(reqs(ms), |r| {
            out.push(r.arrival.0 / 1_000_000);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn window_first_and_scale() {
        let ms = [0, 1000, 2000, 3000, 4000];
        let w = Slice {
            from: Some(Nanos::from_millis(1000)),
            to: Some(Nanos::from_millis(4000)),
            ..Default::default()
        };
        assert_eq!(run(&w, &ms), vec![1000, 2000, 3000]);
        let w = Slice { rebase: true, ..w };
        assert_eq!(run(&w, &ms), vec![0, 1000, 2000]);
        let f = Slice {
            first: Some(2),
            rate_scale: Some(4.0),
            ..Default::default()
        };
        assert_eq!(run(&f, &ms), vec![0, 250]);
    }
}

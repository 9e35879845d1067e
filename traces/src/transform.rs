//! Trace transformations: a time window, the first N requests, and rate
//! scaling by compressing timestamps (`moonlab trace slice`).

use crate::{MAX_ARRIVAL, MAX_ARRIVAL_MS};
use moonlab_core::{Nanos, Request};

/// A retimed request that cannot be represented. `request` counts the
/// input's requests from 1 (the line, in a file without blank lines).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SliceError {
    #[error("request {request} (at {input_ms} ms) would arrive at {scaled_ms:.0} ms, beyond the latest representable arrival ({MAX_ARRIVAL_MS} ms, about 317 years); use a larger --rate-scale or a shorter window")]
    BeyondRange {
        request: u64,
        input_ms: f64,
        scaled_ms: f64,
    },
    #[error("request {request} (at {input_ms} ms) and the one before it (at {previous_ms} ms) would arrive at the same nanosecond: rate scale {rate_scale} erases the gap between them (expected a scale that keeps distinct arrivals distinct)")]
    Collapsed {
        request: u64,
        input_ms: f64,
        previous_ms: f64,
        rate_scale: f64,
    },
}

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
    /// as nothing more can be kept. A request whose new arrival is beyond
    /// [`MAX_ARRIVAL`], or whom scaling puts on the same nanosecond as a
    /// request that arrived earlier in the input, is an error
    /// ([`SliceError`]).
    pub fn apply<E: From<SliceError>>(
        &self,
        requests: impl IntoIterator<Item = Result<Request, E>>,
        mut emit: impl FnMut(Request) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut kept = 0u64;
        let mut base: Option<Nanos> = None;
        let mut previous: Option<(Nanos, Nanos)> = None;
        let ms = |t: Nanos| t.0 as f64 / 1e6;
        for (index, r) in requests.into_iter().enumerate() {
            let mut r = r?;
            let request = index as u64 + 1;
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
            if t.round() > MAX_ARRIVAL.0 as f64 {
                return Err(SliceError::BeyondRange {
                    request,
                    input_ms: ms(r.arrival),
                    scaled_ms: t / 1e6,
                }
                .into());
            }
            let arrival = Nanos(t.round() as u64);
            if let (Some(k), Some((prev_in, prev_out))) = (self.rate_scale, previous) {
                if prev_in != r.arrival && prev_out == arrival {
                    return Err(SliceError::Collapsed {
                        request,
                        input_ms: ms(r.arrival),
                        previous_ms: ms(prev_in),
                        rate_scale: k,
                    }
                    .into());
                }
            }
            previous = Some((r.arrival, arrival));
            r.arrival = arrival;
            emit(r)?;
            kept += 1;
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reqs(ms: &[u64]) -> Vec<Result<Request, SliceError>> {
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

#[cfg(test)]
mod bound_tests {
    use super::*;

    fn at(ns: &[u64]) -> Vec<Result<Request, SliceError>> {
        ns.iter()
            .map(|&t| {
                Ok(Request {
                    arrival: Nanos(t),
                    input_tokens: 1,
                    output_tokens: 1,
                    blocks: vec![],
                })
            })
            .collect()
    }

    fn scaled(k: f64, ns: &[u64]) -> Result<u64, SliceError> {
        let s = Slice {
            rate_scale: Some(k),
            ..Default::default()
        };
        s.apply(at(ns), |_| Ok(()))
    }

    #[test]
    fn a_scale_that_overflows_the_clock_names_the_request() {
        let ms = 1_000_000;
        let e = scaled(1e-12, &[0, 50 * ms, 100 * ms]).unwrap_err();
        assert!(
            matches!(e, SliceError::BeyondRange { request: 2, .. }),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("request 2 (at 50 ms) would arrive at 50000000000000 ms"),
            "{e}"
        );
        assert_eq!(scaled(1e-6, &[0, 5 * ms]), Ok(2));
    }

    #[test]
    fn a_scale_that_merges_distinct_arrivals_names_the_request() {
        let ms = 1_000_000;
        let e = scaled(1e12, &[0, 0, 7 * ms, 9 * ms]).unwrap_err();
        assert!(
            matches!(e, SliceError::Collapsed { request: 3, .. }),
            "{e:?}"
        );
        // Requests that arrived together may stay together.
        assert_eq!(scaled(1e12, &[5 * ms, 5 * ms]), Ok(2));
        assert_eq!(scaled(1e6, &[0, ms, 2 * ms]), Ok(3));
    }
}

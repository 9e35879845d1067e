//! The simulator's per-request table as Parquet, column for column the same
//! as the CSV variant (`moonlab sim --table-format csv`): nullable columns
//! for the instances and the rejection reason, seconds as f64.

use moonlab_sim::cluster::RequestRecord;
use polars::prelude::*;

#[derive(Debug, thiserror::Error)]
#[error("cannot build the Parquet table: {0}")]
pub struct TableError(#[from] PolarsError);

/// Column names, in order (shared with the CSV writer).
pub const REQUEST_COLUMNS: [&str; 18] = [
    "id",
    "arrival_s",
    "served",
    "reject_reason",
    "prefill",
    "decode",
    "input_tokens",
    "output_tokens",
    "prefix_tokens",
    "ssd_tokens",
    "fetched_tokens",
    "fetch_bytes",
    "fetch_s",
    "queue_s",
    "prefill_s",
    "ttft_s",
    "tbt_s",
    "finish_s",
];

fn frame(records: &[RequestRecord]) -> Result<DataFrame, TableError> {
    fn column<T>(name: &str, records: &[RequestRecord], f: impl Fn(&RequestRecord) -> T) -> Column
    where
        Series: NamedFrom<Vec<T>, [T]>,
    {
        Series::new(name.into(), records.iter().map(f).collect::<Vec<T>>()).into()
    }
    let r = records;
    let columns = vec![
        column("id", r, |x| x.id),
        column("arrival_s", r, |x| x.arrival_s),
        column("served", r, |x| x.served),
        column("reject_reason", r, |x| x.reject_reason),
        column("prefill", r, |x| x.prefill),
        column("decode", r, |x| x.decode),
        column("input_tokens", r, |x| x.input_tokens),
        column("output_tokens", r, |x| x.output_tokens),
        column("prefix_tokens", r, |x| x.prefix_tokens),
        column("ssd_tokens", r, |x| x.ssd_tokens),
        column("fetched_tokens", r, |x| x.fetched_tokens),
        column("fetch_bytes", r, |x| x.fetch_bytes),
        column("fetch_s", r, |x| x.fetch_s),
        column("queue_s", r, |x| x.queue_s),
        column("prefill_s", r, |x| x.prefill_s),
        column("ttft_s", r, |x| x.ttft_s),
        column("tbt_s", r, |x| x.tbt_s),
        column("finish_s", r, |x| x.finish_s),
    ];
    Ok(DataFrame::new(records.len(), columns)?)
}

/// Encodes the per-request table as a Parquet file in memory (the caller
/// writes it atomically).
pub fn requests_parquet(records: &[RequestRecord]) -> Result<Vec<u8>, TableError> {
    let mut df = frame(records)?;
    let mut out = std::io::Cursor::new(Vec::new());
    ParquetWriter::new(&mut out).finish(&mut df)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_parquet() {
        let records = vec![
            RequestRecord {
                id: 0,
                arrival_s: 1.5,
                served: true,
                prefill: Some(3),
                decode: Some(9),
                input_tokens: 1000,
                output_tokens: 10,
                prefix_tokens: 512,
                ttft_s: 0.25,
                ..RequestRecord::default()
            },
            RequestRecord {
                id: 1,
                arrival_s: 2.0,
                served: false,
                reject_reason: Some("ttft-slo"),
                input_tokens: 7,
                output_tokens: 1,
                ..RequestRecord::default()
            },
        ];
        let bytes = requests_parquet(&records).unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
        let df = ParquetReader::new(std::io::Cursor::new(bytes))
            .finish()
            .unwrap();
        assert_eq!(df.height(), 2);
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, REQUEST_COLUMNS.map(String::from).to_vec());
        let ttft = df.column("ttft_s").unwrap().f64().unwrap().get(0);
        assert_eq!(ttft, Some(0.25));
        let prefill = df.column("prefill").unwrap().u32().unwrap();
        assert_eq!((prefill.get(0), prefill.get(1)), (Some(3), None));
        let reason = df.column("reject_reason").unwrap().str().unwrap();
        assert_eq!((reason.get(0), reason.get(1)), (None, Some("ttft-slo")));
    }
}

//! The per-request table as Parquet, column for column the same as the CSV
//! variant (`moonlab sim --table-format csv`): both follow core's column
//! list ([`REQUEST_COLUMNS`]), so a new column appears in both at once.
//! Nullable columns for the instances and the rejection reason, seconds as
//! f64.

use moonlab_core::metrics::{Cell, ColumnType, RequestRecord, REQUEST_COLUMNS};
use polars_core::prelude::*;
use polars_io::prelude::*;

#[derive(Debug, thiserror::Error)]
#[error("cannot build the Parquet table: {0}")]
pub struct TableError(#[from] PolarsError);

fn frame(records: &[RequestRecord]) -> Result<DataFrame, TableError> {
    let columns: Vec<Column> = REQUEST_COLUMNS
        .iter()
        .map(|c| {
            let name = c.name.into();
            let cells = records.iter().map(|r| (c.get)(r));
            let series = match c.ty {
                ColumnType::U32 => Series::new(
                    name,
                    cells
                        .map(|v| if let Cell::U32(x) = v { x } else { 0 })
                        .collect::<Vec<u32>>(),
                ),
                ColumnType::U64 => Series::new(
                    name,
                    cells
                        .map(|v| if let Cell::U64(x) = v { x } else { 0 })
                        .collect::<Vec<u64>>(),
                ),
                ColumnType::F64 => Series::new(
                    name,
                    cells
                        .map(|v| if let Cell::F64(x) = v { x } else { f64::NAN })
                        .collect::<Vec<f64>>(),
                ),
                ColumnType::Bool => Series::new(
                    name,
                    cells
                        .map(|v| matches!(v, Cell::Bool(true)))
                        .collect::<Vec<bool>>(),
                ),
                ColumnType::OptU32 => Series::new(
                    name,
                    cells
                        .map(|v| if let Cell::OptU32(x) = v { x } else { None })
                        .collect::<Vec<Option<u32>>>(),
                ),
                ColumnType::OptStr => Series::new(
                    name,
                    cells
                        .map(|v| if let Cell::OptStr(x) = v { x } else { None })
                        .collect::<Vec<Option<&str>>>(),
                ),
            };
            series.into()
        })
        .collect();
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
        assert_eq!(
            names,
            REQUEST_COLUMNS
                .iter()
                .map(|c| c.name.to_string())
                .collect::<Vec<_>>()
        );
        let ttft = df.column("ttft_s").unwrap().f64().unwrap().get(0);
        assert_eq!(ttft, Some(0.25));
        let prefill = df.column("prefill").unwrap().u32().unwrap();
        assert_eq!((prefill.get(0), prefill.get(1)), (Some(3), None));
        let reason = df.column("reject_reason").unwrap().str().unwrap();
        assert_eq!((reason.get(0), reason.get(1)), (None, Some("ttft-slo")));
    }
}

//! Cache capacities as users write them: `5859` (blocks), `3Mtok`
//! (tokens, converted to whole blocks), `20k`, `inf`.

use std::fmt;

/// A cache capacity. Token capacities are converted to whole blocks
/// (`floor(tokens / block_tokens)`) by [`Capacity::blocks`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capacity {
    Blocks(u64),
    Tokens(u64),
    Unbounded,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid capacity `{text}`: {why} (expected a block count like `5859` or `20k`, a token count like `3Mtok`, or `inf`)")]
pub struct CapacityError {
    pub text: String,
    pub why: &'static str,
}

impl Capacity {
    /// Capacity in blocks of `block_tokens` tokens; `None` when unbounded.
    pub fn blocks(self, block_tokens: u32) -> Option<u64> {
        match self {
            Capacity::Blocks(b) => Some(b),
            Capacity::Tokens(t) => Some(t / block_tokens as u64),
            Capacity::Unbounded => None,
        }
    }

    /// Parses `inf`, `5859`, `20k`, `1.5M`, `3Mtok`, `500ktok`, `100blocks`.
    /// Suffixes k, M, G are decimal (×10³, ×10⁶, ×10⁹).
    pub fn parse(text: &str) -> Result<Capacity, CapacityError> {
        let err = |why| CapacityError {
            text: text.to_string(),
            why,
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(err("it is empty"));
        }
        if matches!(
            t.to_ascii_lowercase().as_str(),
            "inf" | "unbounded" | "infinite"
        ) {
            return Ok(Capacity::Unbounded);
        }
        let (num, tokens) =
            if let Some(n) = t.strip_suffix("tok").or_else(|| t.strip_suffix("tokens")) {
                (n, true)
            } else if let Some(n) = t.strip_suffix("blocks").or_else(|| t.strip_suffix("blk")) {
                (n, false)
            } else {
                (t, false)
            };
        let (digits, scale) = match num.chars().last() {
            Some('k') | Some('K') => (&num[..num.len() - 1], 1e3),
            Some('M') | Some('m') => (&num[..num.len() - 1], 1e6),
            Some('G') | Some('g') => (&num[..num.len() - 1], 1e9),
            _ => (num, 1.0),
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(err("it is not a number with an optional k/M/G suffix"));
        }
        let value: f64 = digits.parse().map_err(|_| err("it is not a number"))?;
        let value = value * scale;
        if !value.is_finite() || value > 1e18 {
            return Err(err("it is too large"));
        }
        if value.fract() != 0.0 {
            return Err(err("it is not a whole number"));
        }
        let value = value as u64;
        Ok(if tokens {
            Capacity::Tokens(value)
        } else {
            Capacity::Blocks(value)
        })
    }

    /// Parses a comma-separated list, e.g. `1000,5859,20000,inf`.
    pub fn parse_list(text: &str) -> Result<Vec<Capacity>, CapacityError> {
        text.split(',').map(Capacity::parse).collect()
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capacity::Blocks(b) => write!(f, "{b}"),
            Capacity::Tokens(t) => write!(f, "{t}tok"),
            Capacity::Unbounded => write!(f, "inf"),
        }
    }
}

impl std::str::FromStr for Capacity {
    type Err = CapacityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Capacity::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(Capacity::parse("5859"), Ok(Capacity::Blocks(5859)));
        assert_eq!(Capacity::parse("20k"), Ok(Capacity::Blocks(20_000)));
        assert_eq!(Capacity::parse("3Mtok"), Ok(Capacity::Tokens(3_000_000)));
        assert_eq!(Capacity::parse("1.5Mtok"), Ok(Capacity::Tokens(1_500_000)));
        assert_eq!(Capacity::parse("inf"), Ok(Capacity::Unbounded));
        assert_eq!(Capacity::parse("100blocks"), Ok(Capacity::Blocks(100)));
        assert_eq!(Capacity::Tokens(3_000_000).blocks(512), Some(5859));
        assert_eq!(Capacity::Unbounded.blocks(512), None);
    }

    #[test]
    fn rejects_garbage_with_the_text() {
        for bad in ["", "abc", "-5", "1.5", "3Xtok", "1e30", "12 34"] {
            let e = Capacity::parse(bad).unwrap_err();
            assert_eq!(e.text, bad);
            assert!(e.to_string().contains("expected"), "{e}");
        }
    }

    #[test]
    fn list() {
        let l = Capacity::parse_list("1000,5859,20000,inf").unwrap();
        assert_eq!(l.len(), 4);
        assert!(Capacity::parse_list("1000,,inf").is_err());
    }
}

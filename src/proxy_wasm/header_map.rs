//! The proxy-wasm serialized header map: u32 count N, N (u32 key len, u32 value len) pairs, then each
//! key and value followed by a NUL. All integers little-endian.
//!
//! Decoding reads guest-supplied bytes through a cursor that never indexes out of bounds and
//! rejects trailing data.

use super::abi::{MAX_HEADER_MAP_BYTES, MAX_HEADER_PAIRS};
use crate::stream::HeaderPair;

pub fn encode(pairs: &[HeaderPair]) -> Vec<u8> {
    let size = 4 + pairs.iter().map(|(k, v)| 8 + k.len() + v.len() + 2).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    TooLarge,
    TooManyPairs,
    Truncated,
    MissingNul,
    TrailingData,
}

/// A map a guest sends, read as Envoy's host reads it (`PairsUtil::toPairs`): a malformed,
/// oversized or overlong map is no map at all (empty), not an error status.
pub fn decode_lenient(bytes: &[u8]) -> Vec<HeaderPair> {
    decode(bytes).unwrap_or_default()
}

pub fn decode(bytes: &[u8]) -> Result<Vec<HeaderPair>, DecodeError> {
    if bytes.len() > MAX_HEADER_MAP_BYTES {
        return Err(DecodeError::TooLarge);
    }
    // An empty map may be sent as nothing at all, or as a single NUL.
    if bytes.is_empty() || bytes == [0] {
        return Ok(Vec::new());
    }
    let mut cursor = bytes;
    let mut take = |n: usize| -> Result<&[u8], DecodeError> {
        if cursor.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = cursor.split_at(n);
        cursor = rest;
        Ok(head)
    };
    let read_u32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = read_u32(take(4)?);
    if count > MAX_HEADER_PAIRS {
        return Err(DecodeError::TooManyPairs);
    }
    let mut sizes = Vec::with_capacity(count);
    for _ in 0..count {
        let k = read_u32(take(4)?);
        let v = read_u32(take(4)?);
        sizes.push((k, v));
    }
    let mut pairs = Vec::with_capacity(count);
    for (k, v) in sizes {
        let key = take(k)?.to_vec();
        if take(1)? != [0] {
            return Err(DecodeError::MissingNul);
        }
        let value = take(v)?.to_vec();
        if take(1)? != [0] {
            return Err(DecodeError::MissingNul);
        }
        pairs.push((key, value));
    }
    if !cursor.is_empty() {
        return Err(DecodeError::TrailingData);
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<HeaderPair> {
        items.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn round_trips() {
        for p in [pairs(&[]), pairs(&[(":path", "/"), ("x", "")]), pairs(&[("a", "1"), ("a", "2")])] {
            assert_eq!(decode(&encode(&p)).unwrap(), p);
        }
        assert_eq!(decode(&[0]).unwrap(), vec![]);
    }

    #[test]
    fn hostile_maps_are_rejected_not_indexed() {
        let good = encode(&pairs(&[("key", "value")]));
        for cut in 1..good.len() {
            assert!(decode(&good[..cut]).is_err(), "prefix of {cut} bytes");
        }
        let mut trailing = good.clone();
        trailing.push(7);
        assert_eq!(decode(&trailing), Err(DecodeError::TrailingData));
        let mut no_nul = good.clone();
        let i = 4 + 8 + 3;
        no_nul[i] = b'!';
        assert_eq!(decode(&no_nul), Err(DecodeError::MissingNul));
        let mut huge_len = good;
        huge_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge_len), Err(DecodeError::Truncated));
        assert_eq!(decode(&u32::MAX.to_le_bytes()), Err(DecodeError::TooManyPairs));
    }
}

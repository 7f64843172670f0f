//! The proxy-wasm header-map codec (`thaw::proxy_wasm::header_map`): decoding arbitrary bytes
//! never panics, and what decodes re-encodes to the same bytes (the format has one encoding, but
//! for the empty map's short forms) and decodes to the same pairs; pairs cut from the input encode
//! and decode back to themselves within the limits, and are refused beyond them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use thaw::proxy_wasm::abi::{MAX_HEADER_MAP_BYTES, MAX_HEADER_PAIRS};
use thaw::proxy_wasm::header_map::{decode, decode_lenient, encode, DecodeError};

fuzz_target!(|data: &[u8]| {
    let decoded = decode(data);
    assert_eq!(decode_lenient(data), decode(data).unwrap_or_default());
    if let Ok(pairs) = &decoded {
        let encoded = encode(pairs);
        if data.is_empty() || data == [0] {
            assert!(pairs.is_empty());
        } else {
            assert_eq!(encoded, data, "the one encoding of {} pairs", pairs.len());
        }
        assert_eq!(decode(&encoded).as_ref(), Ok(pairs));
    }

    // The other direction: pairs made from the input (split at 0xFF, alternately key and value).
    let mut parts = data.split(|b| *b == 0xff).map(<[u8]>::to_vec);
    let mut pairs = Vec::new();
    while let Some(key) = parts.next() {
        pairs.push((key, parts.next().unwrap_or_default()));
    }
    let encoded = encode(&pairs);
    match decode(&encoded) {
        Ok(back) => assert_eq!(back, pairs),
        Err(DecodeError::TooLarge) => assert!(encoded.len() > MAX_HEADER_MAP_BYTES),
        Err(DecodeError::TooManyPairs) => assert!(pairs.len() > MAX_HEADER_PAIRS),
        Err(e) => panic!("a map the host encoded does not decode: {e:?}"),
    }
});

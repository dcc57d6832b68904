//! The Proxy-Wasm serialized header map, read without trusting it.
//!
//! The host hands a header map over as one buffer:
//!
//! ```text
//! u32 LE  count
//! count × (u32 LE key length, u32 LE value length)
//! count × (key bytes, NUL, value bytes, NUL)
//! ```
//!
//! proxy-wasm 0.2.5 parses this with slice indexing and `String::from_utf8(key).unwrap()`, so
//! a header name that is not UTF-8 (or a short buffer) traps the VM and fails every request
//! on that worker. [`parse`] instead checks every bound, never assumes UTF-8, and returns
//! slices of the one buffer: no copy per header.

/// One header pair as borrowed bytes: (name, value).
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// Parse a serialized header map into (name, value) slices of `buf`, in the host's order.
///
/// An empty buffer is an empty map (the host sends no buffer when there are no headers).
/// Returns `None` when the buffer is malformed in any way: truncated, a length past the end,
/// a missing NUL terminator, trailing bytes, or a count that cannot fit the buffer.
/// Never panics, whatever the input.
pub fn parse(buf: &[u8]) -> Option<Vec<Pair<'_>>> {
    if buf.is_empty() {
        return Some(Vec::new());
    }
    let count = usize::try_from(read_u32(buf, 0)?).ok()?;
    // The size table alone needs 8 bytes per pair; reject a hostile count before reserving.
    let table_end = count.checked_mul(8)?.checked_add(4)?;
    if table_end > buf.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    let mut data = table_end;
    for i in 0..count {
        let entry = i.checked_mul(8)?.checked_add(4)?;
        let key_len = usize::try_from(read_u32(buf, entry)?).ok()?;
        let value_len = usize::try_from(read_u32(buf, entry.checked_add(4)?)?).ok()?;
        let (key, next) = take_terminated(buf, data, key_len)?;
        let (value, next) = take_terminated(buf, next, value_len)?;
        pairs.push((key, value));
        data = next;
    }
    if data != buf.len() {
        return None;
    }
    Some(pairs)
}

/// Serialize pairs in the same format (for a local reply's headers). The inverse of
/// [`parse`]. Returns `None` only if a length does not fit in a `u32`.
pub fn serialize(pairs: &[(&[u8], &[u8])]) -> Option<Vec<u8>> {
    let mut size = 4usize;
    for (k, v) in pairs {
        size = size.checked_add(8)?.checked_add(k.len())?.checked_add(v.len())?.checked_add(2)?;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&u32::try_from(pairs.len()).ok()?.to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&u32::try_from(k.len()).ok()?.to_le_bytes());
        out.extend_from_slice(&u32::try_from(v.len()).ok()?.to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    Some(out)
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// `len` bytes at `at`, which must be followed by a NUL; returns them and the offset after
/// the NUL.
fn take_terminated(buf: &[u8], at: usize, len: usize) -> Option<(&[u8], usize)> {
    let end = at.checked_add(len)?;
    let bytes = buf.get(at..end)?;
    if *buf.get(end)? != 0 {
        return None;
    }
    Some((bytes, end.checked_add(1)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example map from proxy-wasm's own tests, byte for byte.
    #[rustfmt::skip]
    const SDK_EXAMPLE: &[u8] = &[
        4, 0, 0, 0,
        7, 0, 0, 0, 3, 0, 0, 0,
        5, 0, 0, 0, 8, 0, 0, 0,
        10, 0, 0, 0, 11, 0, 0, 0,
        10, 0, 0, 0, 10, 0, 0, 0,
        58, 109, 101, 116, 104, 111, 100, 0, 71, 69, 84, 0,
        58, 112, 97, 116, 104, 0, 47, 98, 121, 116, 101, 115, 47, 49, 0,
        58, 97, 117, 116, 104, 111, 114, 105, 116, 121, 0,
        104, 116, 116, 112, 98, 105, 110, 46, 111, 114, 103, 0,
        80, 111, 119, 101, 114, 101, 100, 45, 66, 121, 0,
        112, 114, 111, 120, 121, 45, 119, 97, 115, 109, 0,
    ];

    fn owned(pairs: &[Pair<'_>]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
    }

    #[test]
    fn parses_the_sdk_example() {
        let pairs = parse(SDK_EXAMPLE).unwrap();
        let expected: Vec<Pair<'_>> = vec![
            (b":method", b"GET"),
            (b":path", b"/bytes/1"),
            (b":authority", b"httpbin.org"),
            (b"Powered-By", b"proxy-wasm"),
        ];
        assert_eq!(pairs, expected);
    }

    #[test]
    fn empty_buffer_is_an_empty_map() {
        assert_eq!(parse(&[]), Some(vec![]));
        assert_eq!(parse(&[0, 0, 0, 0]), Some(vec![]));
    }

    #[test]
    fn slices_borrow_the_buffer() {
        let pairs = parse(SDK_EXAMPLE).unwrap();
        let range = SDK_EXAMPLE.as_ptr_range();
        for (k, v) in pairs {
            assert!(range.contains(&k.as_ptr()) && range.contains(&v.as_ptr()));
        }
    }

    #[test]
    fn non_utf8_names_and_values_are_kept_as_bytes() {
        let map: Vec<Pair<'_>> = vec![(b"x-\xff\xfe", b"\x80obs-text\xff"), (b"", b"")];
        let buf = serialize(&map).unwrap();
        assert_eq!(parse(&buf).unwrap(), map);
    }

    #[test]
    fn embedded_nul_in_a_value_is_fine_because_lengths_rule() {
        let map: Vec<Pair<'_>> = vec![(b"a", b"x\0y")];
        let buf = serialize(&map).unwrap();
        assert_eq!(parse(&buf).unwrap(), map);
    }

    #[test]
    fn round_trips() {
        let map: Vec<Pair<'_>> =
            vec![(b":method", b"POST"), (b"content-type", b"application/json"), (b"x-dup", b"1"), (b"x-dup", b"2")];
        let buf = serialize(&map).unwrap();
        assert_eq!(owned(&parse(&buf).unwrap()), owned(&map));
    }

    #[test]
    fn every_truncation_is_rejected() {
        for len in 1..SDK_EXAMPLE.len() {
            assert_eq!(parse(&SDK_EXAMPLE[..len]), None, "prefix of {len} bytes");
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut buf = SDK_EXAMPLE.to_vec();
        buf.push(0);
        assert_eq!(parse(&buf), None);
    }

    #[test]
    fn missing_terminator_is_rejected() {
        let mut buf = serialize(&[(b"ab", b"cd")]).unwrap();
        let last_key_byte = 4 + 8 + 2; // the NUL after "ab"
        buf[last_key_byte] = b'!';
        assert_eq!(parse(&buf), None);
    }

    #[test]
    fn hostile_counts_and_lengths_are_rejected_without_allocating_them() {
        // A count that would need gigabytes of size table.
        assert_eq!(parse(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]), None);
        assert_eq!(parse(&[0xff, 0xff, 0xff, 0x7f]), None);
        // One pair whose key length points past the end, and one that would overflow.
        let mut buf = vec![1, 0, 0, 0];
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        buf.extend_from_slice(b"k\0v\0");
        assert_eq!(parse(&buf), None);
        // Lengths that are each fine but overlap the end once added up.
        let mut buf = vec![1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0];
        buf.extend_from_slice(b"ab\0c\0");
        assert_eq!(parse(&buf), None);
    }

    #[test]
    fn short_count_is_rejected() {
        assert_eq!(parse(&[1]), None);
        assert_eq!(parse(&[1, 0, 0]), None);
    }

    /// A tiny xorshift generator: no dependency, reproducible.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> usize {
            usize::try_from(self.next() % n.max(1)).unwrap()
        }
    }

    /// Random bytes, and random mutations of valid maps, never panic; whatever parses
    /// serializes back to exactly the input.
    #[test]
    fn random_inputs_never_panic_and_valid_parses_round_trip() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut valid = 0u32;
        for i in 0..100_000u32 {
            let buf: Vec<u8> = if i % 2 == 0 {
                let len = rng.below(64);
                let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                // Small counts make the structured paths reachable.
                if let Some(first) = b.first_mut() {
                    *first %= 4;
                }
                for byte in b.iter_mut().skip(1).take(3) {
                    *byte = 0;
                }
                b
            } else {
                let n = rng.below(4);
                let owned: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
                    .map(|_| {
                        let k = (0..rng.below(6)).map(|_| rng.next() as u8).collect();
                        let v = (0..rng.below(6)).map(|_| rng.next() as u8).collect();
                        (k, v)
                    })
                    .collect();
                let pairs: Vec<Pair<'_>> = owned.iter().map(|(k, v)| (&k[..], &v[..])).collect();
                let mut b = serialize(&pairs).unwrap();
                match rng.below(4) {
                    0 => {}
                    1 => {
                        let at = rng.below(b.len() as u64);
                        b[at] ^= 1 << rng.below(8);
                    }
                    2 => b.truncate(rng.below(b.len() as u64)),
                    _ => b.push(rng.next() as u8),
                }
                b
            };
            if let Some(pairs) = parse(&buf) {
                valid += 1;
                if !buf.is_empty() {
                    assert_eq!(serialize(&pairs).unwrap(), buf);
                }
            }
        }
        assert!(valid > 10_000, "only {valid} valid inputs: the generator is too hostile");
    }
}

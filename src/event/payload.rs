//! The store's payload decoder: bincode 2's standard wire format (`journal-format.md` §5) read
//! back through serde, with every length a payload announces bounded by the bytes left in it.
//!
//! bincode's own decoder guards allocations with a budget of in-memory bytes (`with_limit`):
//! a one-byte integer counts 8, so a payload the encoder wrote within the journal's record
//! limit could exceed the budget and never decode again. Without a budget it allocates a
//! string by the length it reads. This decoder has no budget and never allocates by a claim:
//!
//! * a string or byte buffer may announce at most as many bytes as are left, and is copied
//!   from the payload (exactly its length);
//! * a sequence or map may announce at most as many elements as bytes are left, and nothing
//!   is allocated ahead of the elements (it reports no size hint, so serde's collections grow
//!   with what is actually decoded);
//! * containers nest at most [`DEPTH_MAX`] deep (recursive event types cannot overflow the
//!   stack on a crafted record).
//!
//! So decoding `N` bytes takes `O(N)` time and memory. The last two rules can refuse an
//! encoding that bincode writes (a sequence of elements that encode to nothing — `()`, structs
//! of skipped fields — longer than the rest of the payload; an event nested deeper than
//! [`DEPTH_MAX`]): the store decodes every payload it encodes before writing it, so such an
//! event is refused by `Store::apply`, never journaled. A [`crate::ChangeSet`] is never refused
//! by them (each of its elements takes at least one byte; it nests 9 deep).

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

/// How deep containers (sequences, maps, tuples, structs, enum variants, options, newtypes)
/// may nest in a payload.
pub const DEPTH_MAX: usize = 128;

/// Why a payload does not decode.
#[derive(Debug)]
pub(crate) struct PayloadError(String);

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PayloadError {}

impl de::Error for PayloadError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        PayloadError(msg.to_string())
    }
}

type Result<T> = std::result::Result<T, PayloadError>;

// bincode 2's varint markers (`journal-format.md` §5).
const SINGLE_BYTE_MAX: u8 = 250;
const U16_BYTE: u8 = 251;
const U32_BYTE: u8 = 252;
const U64_BYTE: u8 = 253;
const U128_BYTE: u8 = 254;

/// Decodes `T` from the start of `payload`; returns it and the number of bytes it took.
pub(crate) fn decode_prefix<'a, T: de::Deserialize<'a>>(payload: &'a [u8]) -> Result<(T, usize)> {
    let mut d = PayloadDecoder {
        rest: payload,
        len: payload.len(),
        depth: 0,
    };
    let v = T::deserialize(&mut d)?;
    Ok((v, payload.len() - d.rest.len()))
}

struct PayloadDecoder<'a> {
    rest: &'a [u8],
    /// The payload's length (to give offsets in errors).
    len: usize,
    depth: usize,
}

impl<'a> PayloadDecoder<'a> {
    fn offset(&self) -> usize {
        self.len - self.rest.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        match self.rest.split_at_checked(n) {
            Some((head, tail)) => {
                self.rest = tail;
                Ok(head)
            }
            None => Err(PayloadError(format!(
                "payload of {} bytes ends {} bytes short of what offset {} needs ({n} bytes)",
                self.len,
                n - self.rest.len(),
                self.offset(),
            ))),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// An unsigned varint whose type is `bits` wide: markers for wider types are errors.
    fn varint(&mut self, bits: u32) -> Result<u128> {
        let at = self.offset();
        let marker = self.byte()?;
        Ok(match marker {
            0..=SINGLE_BYTE_MAX => marker.into(),
            U16_BYTE => u16::from_le_bytes(self.array()?).into(),
            U32_BYTE if bits >= 32 => u32::from_le_bytes(self.array()?).into(),
            U64_BYTE if bits >= 64 => u64::from_le_bytes(self.array()?).into(),
            U128_BYTE if bits >= 128 => u128::from_le_bytes(self.array()?),
            _ => {
                return Err(PayloadError(format!(
                    "varint marker {marker} at offset {at} is not valid for a {bits}-bit integer"
                )));
            }
        })
    }

    fn unsigned(&mut self, bits: u32) -> Result<u128> {
        self.varint(bits)
    }

    /// A zigzag-encoded signed varint.
    fn signed(&mut self, bits: u32) -> Result<i128> {
        let n = self.varint(bits)?;
        Ok(if n % 2 == 0 {
            (n / 2) as i128
        } else {
            !((n / 2) as i128)
        })
    }

    /// An announced length (of a string, byte buffer, sequence or map), at most the bytes left.
    fn length(&mut self, what: &str) -> Result<usize> {
        let at = self.offset();
        let n = self.varint(64)?;
        let left = self.rest.len();
        if n > left as u128 {
            return Err(PayloadError(format!(
                "{what} at offset {at} announces a length of {n}, but only {left} bytes are left in the payload of {} bytes",
                self.len
            )));
        }
        Ok(n as usize)
    }

    fn str(&mut self) -> Result<&'a str> {
        let at = self.offset();
        let n = self.length("a string")?;
        std::str::from_utf8(self.take(n)?)
            .map_err(|e| PayloadError(format!("the string at offset {at} is not UTF-8: {e}")))
    }

    fn enter(&mut self) -> Result<()> {
        if self.depth >= DEPTH_MAX {
            return Err(PayloadError(format!(
                "containers nest deeper than {DEPTH_MAX} at offset {}",
                self.offset()
            )));
        }
        self.depth += 1;
        Ok(())
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.enter()?;
        let r = f(self);
        self.depth -= 1;
        r
    }
}

macro_rules! unsigned {
    ($($method:ident $visit:ident $t:ty,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            let v = self.unsigned(<$t>::BITS)?;
            visitor.$visit(v as $t)
        }
    )*};
}

macro_rules! signed {
    ($($method:ident $visit:ident $t:ty,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            let v = self.signed(<$t>::BITS)?;
            visitor.$visit(v as $t)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut PayloadDecoder<'de> {
    type Error = PayloadError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(PayloadError(
            "the payload format is not self-describing: the event type must name what it reads (deserialize_any)".into(),
        ))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let at = self.offset();
        match self.byte()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            b => Err(PayloadError(format!(
                "byte {b} at offset {at} is not a boolean (0 or 1)"
            ))),
        }
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u8(self.byte()?)
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i8(self.byte()? as i8)
    }

    unsigned! {
        deserialize_u16 visit_u16 u16,
        deserialize_u32 visit_u32 u32,
        deserialize_u64 visit_u64 u64,
        deserialize_u128 visit_u128 u128,
    }

    signed! {
        deserialize_i16 visit_i16 i16,
        deserialize_i32 visit_i32 i32,
        deserialize_i64 visit_i64 i64,
        deserialize_i128 visit_i128 i128,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f32(f32::from_le_bytes(self.array()?))
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f64(f64::from_le_bytes(self.array()?))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let at = self.offset();
        let first = *self.rest.first().ok_or_else(|| {
            PayloadError(format!(
                "payload of {} bytes ends where a character is needed",
                self.len
            ))
        })?;
        let width = match first {
            0x00..=0x7F => 1,
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 0,
        };
        let c = (width > 0)
            .then(|| self.take(width).ok())
            .flatten()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.chars().next());
        match c {
            Some(c) => visitor.visit_char(c),
            None => Err(PayloadError(format!(
                "no UTF-8 character at offset {at} (first byte {first:#04x})"
            ))),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_str(self.str()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = self.length("a byte string")?;
        visitor.visit_borrowed_bytes(self.take(n)?)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let at = self.offset();
        match self.byte()? {
            0 => visitor.visit_none(),
            1 => self.nested(|d| visitor.visit_some(d)),
            b => Err(PayloadError(format!(
                "byte {b} at offset {at} is not an option tag (0 or 1)"
            ))),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.nested(|d| visitor.visit_newtype_struct(d))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let left = self.length("a sequence")?;
        self.nested(|d| visitor.visit_seq(Elements { d, left }))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        // `len` comes from the type, not from the payload.
        self.nested(|d| visitor.visit_seq(Elements { d, left: len }))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let left = self.length("a map")?;
        self.nested(|d| visitor.visit_map(Elements { d, left }))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(fields.len(), visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.nested(|d| visitor.visit_enum(d))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(PayloadError(
            "the payload format has no identifiers (deserialize_identifier)".into(),
        ))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(PayloadError(
            "the payload format is not self-describing: nothing can be skipped (deserialize_ignored_any)".into(),
        ))
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The elements of a sequence, tuple or struct, or the entries of a map: `left` more.
struct Elements<'r, 'a> {
    d: &'r mut PayloadDecoder<'a>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de> {
    type Error = PayloadError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.d).map(Some)
    }

    /// None: nothing is allocated ahead of the elements actually decoded.
    fn size_hint(&self) -> Option<usize> {
        None
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_, 'de> {
    type Error = PayloadError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.d).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.d)
    }

    fn size_hint(&self) -> Option<usize> {
        None
    }
}

impl<'de> de::EnumAccess<'de> for &mut PayloadDecoder<'de> {
    type Error = PayloadError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let at = self.offset();
        let index = self.unsigned(32)? as u32;
        let v = seed
            .deserialize(IntoDeserializer::<PayloadError>::into_deserializer(index))
            .map_err(|e| PayloadError(format!("enum variant {index} at offset {at}: {e}")))?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut PayloadDecoder<'de> {
    type Error = PayloadError;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, fields.len(), visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Unit,
        Newtype(i16),
        Tuple(u8, String),
        Struct { c: char, o: Option<Box<Shape>> },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Wrapper(u32);

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Everything {
        ints: (u8, i8, u16, i16, u32, i32, u64, i64),
        wide: (u128, i128, usize, isize),
        floats: (f32, f64),
        flags: (bool, char, ()),
        text: String,
        bytes: Vec<u8>,
        maybe: Option<Wrapper>,
        pairs: Vec<(String, i64)>,
        map: BTreeMap<u16, Vec<Shape>>,
        shape: Shape,
    }

    fn shape() -> impl Strategy<Value = Shape> {
        let leaf = prop_oneof![
            Just(Shape::Unit),
            any::<i16>().prop_map(Shape::Newtype),
            (any::<u8>(), ".{0,8}").prop_map(|(a, b)| Shape::Tuple(a, b)),
        ];
        leaf.prop_recursive(3, 8, 2, |inner| {
            (any::<char>(), proptest::option::of(inner)).prop_map(|(c, o)| Shape::Struct {
                c,
                o: o.map(Box::new),
            })
        })
    }

    fn everything() -> impl Strategy<Value = Everything> {
        (
            any::<(u8, i8, u16, i16, u32, i32, u64, i64)>(),
            any::<(u128, i128, usize, isize)>(),
            any::<(f32, f64)>(),
            any::<(bool, char)>(),
            ".{0,20}",
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::option::of(any::<u32>()),
            proptest::collection::vec((".{0,6}", any::<i64>()), 0..5),
            proptest::collection::btree_map(
                any::<u16>(),
                proptest::collection::vec(shape(), 0..3),
                0..4,
            ),
            shape(),
        )
            .prop_map(
                |(ints, wide, floats, (b, c), text, bytes, maybe, pairs, map, shape)| Everything {
                    ints,
                    wide,
                    floats,
                    flags: (b, c, ()),
                    text,
                    bytes,
                    maybe: maybe.map(Wrapper),
                    pairs,
                    map,
                    shape,
                },
            )
    }

    fn encode<T: Serialize>(v: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap()
    }

    /// bincode's own decoder, with a budget far above what these small inputs can claim.
    fn bincode_decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Option<(T, usize)> {
        bincode::serde::decode_from_slice(b, bincode::config::standard().with_limit::<1_000_000>())
            .ok()
    }

    proptest! {
        #[test]
        fn what_bincode_encodes_decodes_to_the_same_value(v in everything()) {
            let bytes = encode(&v);
            let (back, used): (Everything, usize) = decode_prefix(&bytes).unwrap();
            prop_assert_eq!(used, bytes.len());
            // Compared through the encoding: NaN is not equal to itself.
            prop_assert_eq!(encode(&back), bytes);
        }

        #[test]
        fn on_damaged_bytes_it_agrees_with_bincode(
            v in everything(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let mut bytes = encode(&v);
            for (at, b, op) in edits {
                let at = at % (bytes.len() + 1);
                match op {
                    0 if at < bytes.len() => bytes[at] = b,
                    1 => bytes.insert(at, b),
                    _ => bytes.truncate(at),
                }
            }
            let ours = decode_prefix::<Everything>(&bytes).ok();
            let theirs = bincode_decode::<Everything>(&bytes);
            match (ours, theirs) {
                (None, None) => {}
                (Some((a, n)), Some((b, m))) => {
                    prop_assert_eq!(n, m);
                    prop_assert_eq!(encode(&a), encode(&b));
                }
                (a, b) => prop_assert!(false, "ours {:?}, bincode's {:?} on {:02x?}", a, b, bytes),
            }
        }
    }

    #[test]
    fn an_announced_length_past_the_end_is_refused_before_allocating() {
        // A string announcing 2^62 bytes in a payload of 10: bincode without a budget would
        // allocate it first.
        let mut b = vec![253];
        b.extend_from_slice(&(1u64 << 62).to_le_bytes());
        b.push(b'x');
        let e = decode_prefix::<String>(&b).unwrap_err().to_string();
        assert!(
            e.contains("announces a length of 4611686018427387904"),
            "{e}"
        );
        assert!(e.contains("only 1 bytes are left"), "{e}");
        // The same for a sequence (whose elements could take no bytes at all) and a map.
        assert!(decode_prefix::<Vec<()>>(&b).is_err());
        assert!(decode_prefix::<BTreeMap<(), ()>>(&b).is_err());
        // At the bound it decodes.
        assert_eq!(
            decode_prefix::<String>(&[1, b'x']).unwrap(),
            ("x".into(), 2)
        );
        assert_eq!(decode_prefix::<Vec<()>>(&[1, 0]).unwrap().0, vec![()]);
    }

    #[test]
    fn nesting_deeper_than_depth_max_is_refused_and_up_to_it_decodes() {
        #[derive(Debug, Serialize, Deserialize)]
        struct Nest(Option<Box<Nest>>);
        let nest = |n: usize| (0..n).fold(Nest(None), |inner, _| Nest(Some(Box::new(inner))));
        // Each level is a newtype and an option: two containers.
        let ok = encode(&nest(DEPTH_MAX / 2 - 1));
        assert!(decode_prefix::<Nest>(&ok).is_ok());
        let deep = encode(&nest(DEPTH_MAX / 2));
        let e = decode_prefix::<Nest>(&deep).unwrap_err().to_string();
        assert!(e.contains("nest deeper than 128"), "{e}");
    }

    #[test]
    fn varint_markers_wider_than_the_type_are_refused() {
        assert_eq!(decode_prefix::<u16>(&[251, 1, 2]).unwrap().0, 0x0201);
        assert!(decode_prefix::<u16>(&[252, 1, 2, 3, 4]).is_err());
        assert!(decode_prefix::<u64>(&[254; 17]).is_err());
        assert!(decode_prefix::<u64>(&[255]).is_err());
        assert_eq!(
            decode_prefix::<i64>(&[253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                .unwrap()
                .0,
            i64::MIN
        );
    }
}

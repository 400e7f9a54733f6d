//! A deserializer adapter that bounds the element count of a decode.
//!
//! bincode bounds what a decode *reads* (the input) and, given a limit, what it *allocates*,
//! but not how many times it loops: a sequence of values that decode from no bytes at all
//! (`()`, `[u8; 0]`, `PhantomData`, unit structs, structs whose fields are all skipped)
//! consumes neither input nor memory per element, so a nine-byte length prefix claiming 2^40
//! of them made the decoder run 2^40 iterations. bincode has no hook for it, hence this
//! adapter: [`Bounded`] wraps bincode's serde `Deserializer` and charges every element of a
//! sequence or map to one [`Budget`] shared by the whole value, nested containers included.
//!
//! What is charged:
//!
//! - A sequence or map is charged its claimed length up front, from the `size_hint` that
//!   bincode's `SeqAccess` / `MapAccess` report (bincode passes the decoded length prefix),
//!   so an oversized claim is refused before its first element is decoded, and before serde
//!   preallocates for it. Should a deserializer give no hint, or yield more elements than it
//!   hinted, the extra elements are charged one at a time as they are decoded.
//! - Tuples, arrays, structs and tuple or struct variants are not charged: bincode takes
//!   their length from the type (`deserialize_tuple(len)`, `fields.len()`), never from the
//!   input, so their cost is a constant of the type. They are still wrapped, so that any
//!   sequence inside them is charged.
//!
//! The visitor is wrapped at every `deserialize_*` method, and through it every path by
//! which serde hands a nested deserializer back (`visit_some`, `visit_newtype_struct`,
//! sequence elements, map keys and values, enum variants), so no sub-value escapes the
//! count. Errors stay the inner deserializer's type (bincode's `DecodeError`): a refusal is
//! made with `serde::de::Error::custom`, and the [`Budget`] records it, so that the caller
//! can report it as a typed error of its own rather than as a string.
//!
//! The same adapter bounds nesting: every compound value (option, newtype, sequence, map,
//! tuple, struct, enum) takes a level of the [`Budget`]'s depth while it decodes, and one
//! past [`MAX_DEPTH`] is refused, so a recursive type cannot recurse until the stack
//! overflows. Every recursion passes through one of those methods, since a type can only
//! contain itself through a compound value; scalars take no level.
//!
//! Cost: every method is `#[inline]`, so that the wrappers compile away into bincode's own
//! loops. Without it, each element of a `Vec<String>` took a call through the wrapper's
//! `next_element_seed` (+6.9% instructions for 1,000 short strings under callgrind); with it
//! and the tuple/sequence distinction made a constant, that decode costs +0.8%, a small
//! struct about 110 instructions (+3.5%), and a snapshot load +1.3%.

use std::cell::Cell;
use std::fmt;

use super::MAX_DEPTH;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// How many sequence and map elements one decode may claim in all, and how deep its
/// compound values may nest ([`MAX_DEPTH`]).
pub(super) struct Budget {
    limit: usize,
    /// Elements charged so far; once above `limit`, every further charge fails too, so that a
    /// visitor that swallowed the first refusal cannot loop on.
    spent: Cell<usize>,
    /// Compound values being decoded right now, each inside the one before.
    depth: Cell<usize>,
    /// Whether a value nested deeper than [`MAX_DEPTH`] was refused.
    too_deep: Cell<bool>,
}

impl Budget {
    #[inline]
    pub(super) fn new(limit: usize) -> Budget {
        Budget {
            limit,
            spent: Cell::new(0),
            depth: Cell::new(0),
            too_deep: Cell::new(false),
        }
    }

    /// Whether a value nested deeper than [`MAX_DEPTH`] was refused.
    #[inline]
    pub(super) fn too_deep(&self) -> bool {
        self.too_deep.get()
    }

    /// Enters one more level of nesting, until the returned guard is dropped; refuses the
    /// level past [`MAX_DEPTH`]. Only compound values (options, newtypes, sequences, maps,
    /// tuples, structs, enums) take a level: every recursion of a recursive type goes through
    /// one of them, and scalars, which cannot recurse, stay free of the check.
    #[inline]
    fn enter<E: de::Error>(&self) -> Result<Level<'_>, E> {
        let depth = self.depth.get() + 1;
        if depth > MAX_DEPTH {
            self.too_deep.set(true);
            return Err(E::custom(format_args!(
                "values nest more than {MAX_DEPTH} levels deep"
            )));
        }
        self.depth.set(depth);
        Ok(Level(self))
    }

    /// The most elements this budget allows.
    #[inline]
    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// The elements claimed when the budget was exceeded (at least that many: the decode
    /// stopped there), or `None` if it was not.
    #[inline]
    pub(super) fn exceeded(&self) -> Option<usize> {
        let spent = self.spent.get();
        (spent > self.limit).then_some(spent)
    }

    #[inline]
    fn charge<E: de::Error>(&self, count: usize) -> Result<(), E> {
        let spent = self.spent.get().saturating_add(count);
        self.spent.set(spent);
        if spent > self.limit {
            return Err(self.refusal());
        }
        Ok(())
    }

    /// The error a refused charge passes up through the decoder. The caller reports
    /// [`Budget::exceeded`] instead, so this text only shows if a visitor wraps it.
    #[cold]
    fn refusal<E: de::Error>(&self) -> E {
        E::custom(format_args!(
            "sequences and maps claim {} elements, more than the {} allowed",
            self.spent.get(),
            self.limit
        ))
    }
}

/// One level of nesting entered with [`Budget::enter`]; left when dropped, on success and
/// error alike.
struct Level<'b>(&'b Budget);

impl Drop for Level<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.depth.set(self.0.depth.get() - 1);
    }
}

/// `D`, with every sequence and map under it charged to `budget`, and every compound value
/// under it counted against [`MAX_DEPTH`].
pub(super) struct Bounded<'b, D> {
    inner: D,
    budget: &'b Budget,
}

impl<'b, D> Bounded<'b, D> {
    #[inline]
    pub(super) fn new(inner: D, budget: &'b Budget) -> Bounded<'b, D> {
        Bounded { inner, budget }
    }

    /// Wraps `visitor`; `COUNTED` says whether a sequence or map it visits takes its length
    /// from the input (and is charged) or from the type (and is not).
    #[inline]
    fn visitor<V, const COUNTED: bool>(&self, visitor: V) -> Counting<'b, V, COUNTED> {
        Counting {
            inner: visitor,
            budget: self.budget,
        }
    }
}

/// Forwards `deserialize_*` methods whose length, if any, comes from the input.
macro_rules! forward_counted {
    ($($method:ident)*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            let visitor = self.visitor::<V, true>(visitor);
            self.inner.$method(visitor)
        }
    )*};
}

/// [`forward_counted`] for compound values, which take a level of nesting.
macro_rules! forward_nested {
    ($($method:ident)*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            let _level = self.budget.enter()?;
            let visitor = self.visitor::<V, true>(visitor);
            self.inner.$method(visitor)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Bounded<'_, D> {
    type Error = D::Error;

    forward_counted! {
        deserialize_bool
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_bytes
        deserialize_unit deserialize_identifier deserialize_ignored_any
    }

    /// Read as a borrowed string, which the visitor copies (an owned `String`'s visitor
    /// takes either): bincode's slice decoder allocates an owned string of the claimed
    /// length before it reads a byte of it, so a corrupt length cost up to the decode limit
    /// (256 times the input when the limit was sized to it), where a borrowed one is checked
    /// against the input left first and allocates nothing: `codec::decode` relies on this to
    /// give bincode no limit. The reader decoder reads both the same way.
    #[inline]
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let visitor = self.visitor::<V, true>(visitor);
        self.inner.deserialize_str(visitor)
    }

    /// Read as borrowed bytes, for the reason given at `deserialize_string`.
    #[inline]
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let visitor = self.visitor::<V, true>(visitor);
        self.inner.deserialize_bytes(visitor)
    }

    forward_nested! {
        deserialize_any deserialize_option deserialize_seq deserialize_map
    }

    #[inline]
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.visitor::<V, true>(visitor);
        self.inner.deserialize_unit_struct(name, visitor)
    }

    #[inline]
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let _level = self.budget.enter()?;
        let visitor = self.visitor::<V, true>(visitor);
        self.inner.deserialize_newtype_struct(name, visitor)
    }

    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let _level = self.budget.enter()?;
        let visitor = self.visitor::<V, false>(visitor);
        self.inner.deserialize_tuple(len, visitor)
    }

    #[inline]
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let _level = self.budget.enter()?;
        let visitor = self.visitor::<V, false>(visitor);
        self.inner.deserialize_tuple_struct(name, len, visitor)
    }

    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let _level = self.budget.enter()?;
        let visitor = self.visitor::<V, false>(visitor);
        self.inner.deserialize_struct(name, fields, visitor)
    }

    #[inline]
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let _level = self.budget.enter()?;
        let visitor = self.visitor::<V, true>(visitor);
        self.inner.deserialize_enum(name, variants, visitor)
    }

    #[inline]
    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A visitor whose nested deserializers and accesses are [`Bounded`] by `budget`. `COUNTED`:
/// whether a sequence or map visited here has its length from the input. A constant rather
/// than a field, so that the elements of a tuple or array (the 32 bytes of a snapshot record's
/// digest) pass through without a per-element test.
struct Counting<'b, V, const COUNTED: bool> {
    inner: V,
    budget: &'b Budget,
}

/// Forwards `visit_*` methods that carry a plain value.
macro_rules! forward_values {
    ($($method:ident($ty:ty))*) => {$(
        #[inline]
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>, const COUNTED: bool> Visitor<'de> for Counting<'_, V, COUNTED> {
    type Value = V::Value;

    #[inline]
    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(formatter)
    }

    forward_values! {
        visit_bool(bool)
        visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64) visit_i128(i128)
        visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64) visit_u128(u128)
        visit_f32(f32) visit_f64(f64) visit_char(char)
        visit_str(&str) visit_borrowed_str(&'de str) visit_string(String)
        visit_bytes(&[u8]) visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>)
    }

    #[inline]
    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    #[inline]
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    #[inline]
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.inner
            .visit_some(Bounded::new(deserializer, self.budget))
    }

    #[inline]
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .visit_newtype_struct(Bounded::new(deserializer, self.budget))
    }

    #[inline]
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let prepaid = self.prepay(seq.size_hint())?;
        self.inner.visit_seq(CountedSeq::<_, COUNTED> {
            inner: seq,
            budget: self.budget,
            prepaid,
        })
    }

    #[inline]
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let prepaid = self.prepay(map.size_hint())?;
        self.inner.visit_map(CountedMap::<_, COUNTED> {
            inner: map,
            budget: self.budget,
            prepaid,
        })
    }

    #[inline]
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(CountedEnum {
            inner: data,
            budget: self.budget,
        })
    }
}

impl<V, const COUNTED: bool> Counting<'_, V, COUNTED> {
    /// Charges a counted container's claimed length before any of its elements is decoded;
    /// returns how many elements that paid for.
    #[inline]
    fn prepay<E: de::Error>(&self, hint: Option<usize>) -> Result<usize, E> {
        match hint {
            Some(claimed) if COUNTED => {
                self.budget.charge(claimed)?;
                Ok(claimed)
            }
            _ => Ok(0),
        }
    }
}

/// Charges one decoded element of a counted container that its hint did not pay for.
#[inline]
fn charge_element<E: de::Error, const COUNTED: bool>(
    prepaid: &mut usize,
    budget: &Budget,
) -> Result<(), E> {
    if !COUNTED {
        Ok(())
    } else if *prepaid > 0 {
        *prepaid -= 1;
        Ok(())
    } else {
        budget.charge(1)
    }
}

/// A seed whose deserializer is [`Bounded`]; `Seed::new(PhantomData::<T>, budget)` decodes a
/// whole `T` within `budget`.
pub(super) struct Seed<'b, S> {
    inner: S,
    budget: &'b Budget,
}

impl<'b, S> Seed<'b, S> {
    #[inline]
    pub(super) fn new(inner: S, budget: &'b Budget) -> Seed<'b, S> {
        Seed { inner, budget }
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.inner
            .deserialize(Bounded::new(deserializer, self.budget))
    }
}

struct CountedSeq<'b, A, const COUNTED: bool> {
    inner: A,
    budget: &'b Budget,
    prepaid: usize,
}

impl<'de, A: SeqAccess<'de>, const COUNTED: bool> SeqAccess<'de> for CountedSeq<'_, A, COUNTED> {
    type Error = A::Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let element = self.inner.next_element_seed(Seed {
            inner: seed,
            budget: self.budget,
        })?;
        if element.is_some() {
            charge_element::<_, COUNTED>(&mut self.prepaid, self.budget)?;
        }
        Ok(element)
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

struct CountedMap<'b, A, const COUNTED: bool> {
    inner: A,
    budget: &'b Budget,
    prepaid: usize,
}

impl<'de, A: MapAccess<'de>, const COUNTED: bool> MapAccess<'de> for CountedMap<'_, A, COUNTED> {
    type Error = A::Error;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let key = self.inner.next_key_seed(Seed {
            inner: seed,
            budget: self.budget,
        })?;
        if key.is_some() {
            charge_element::<_, COUNTED>(&mut self.prepaid, self.budget)?;
        }
        Ok(key)
    }

    #[inline]
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.next_value_seed(Seed {
            inner: seed,
            budget: self.budget,
        })
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

struct CountedEnum<'b, A> {
    inner: A,
    budget: &'b Budget,
}

impl<'de, 'b, A: EnumAccess<'de>> EnumAccess<'de> for CountedEnum<'b, A> {
    type Error = A::Error;
    type Variant = CountedVariant<'b, A::Variant>;

    #[inline]
    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (tag, variant) = self.inner.variant_seed(Seed {
            inner: seed,
            budget: self.budget,
        })?;
        Ok((
            tag,
            CountedVariant {
                inner: variant,
                budget: self.budget,
            },
        ))
    }
}

struct CountedVariant<'b, A> {
    inner: A,
    budget: &'b Budget,
}

impl<'b, A> CountedVariant<'b, A> {
    /// A tuple or struct variant's length comes from the type: not charged.
    #[inline]
    fn fields<V>(&self, visitor: V) -> Counting<'b, V, false> {
        Counting {
            inner: visitor,
            budget: self.budget,
        }
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for CountedVariant<'_, A> {
    type Error = A::Error;

    #[inline]
    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.newtype_variant_seed(Seed {
            inner: seed,
            budget: self.budget,
        })
    }

    #[inline]
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = self.fields(visitor);
        self.inner.tuple_variant(len, visitor)
    }

    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = self.fields(visitor);
        self.inner.struct_variant(fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde::de::value::{Error, MapDeserializer, SeqDeserializer};

    use super::*;

    /// Ten units from an iterator whose length is not known up front (a filter), so that
    /// the deserializer gives no size hint.
    fn ten_unhinted() -> impl Iterator<Item = ()> {
        std::iter::repeat_n((), 10).filter(|_| true)
    }

    /// bincode always reports a sequence's length; a deserializer that does not still has
    /// every element charged, one at a time.
    #[test]
    fn elements_without_a_size_hint_are_charged_one_by_one() {
        let seq = SeqDeserializer::<_, Error>::new(ten_unhinted());
        assert_eq!(seq.size_hint(), None);
        let budget = Budget::new(10);
        let units = Vec::<()>::deserialize(Bounded::new(seq, &budget)).expect("fits");
        assert_eq!(units.len(), 10);
        assert_eq!(budget.exceeded(), None);

        let budget = Budget::new(9);
        let seq = SeqDeserializer::<_, Error>::new(ten_unhinted());
        Vec::<()>::deserialize(Bounded::new(seq, &budget)).expect_err("over");
        assert_eq!(budget.exceeded(), Some(10));

        let budget = Budget::new(9);
        let map = MapDeserializer::<_, Error>::new(ten_unhinted().zip(0u8..));
        std::collections::BTreeMap::<(), u8>::deserialize(Bounded::new(map, &budget))
            .expect_err("over");
        assert_eq!(budget.exceeded(), Some(10));
    }

    /// Once refused, always refused: a visitor that swallowed the error cannot go on.
    #[test]
    fn a_refusal_is_sticky() {
        let budget = Budget::new(3);
        assert!(budget.charge::<Error>(4).is_err());
        assert!(budget.charge::<Error>(0).is_err());
        assert_eq!(budget.exceeded(), Some(4));
    }
}

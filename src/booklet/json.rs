//! Lenient JSON building blocks: wrappers that accept any JSON value and record what they got.
//!
//! The booklet must survive messy events ("one bad item never fails the booklet"), so no field
//! in the input structs can make deserialization fail on a wrong type. Each wrapper below reads
//! the value it expects and otherwise remembers the [`Kind`] it met, so the model can warn with a
//! precise path. Strings are borrowed from the input when they hold no escapes.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The JSON type of a value, for messages such as "must be an object, got array".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "boolean",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::Array => "array",
            Kind::Object => "object",
        }
    }
}

/// Implements the visitor methods for every JSON type except the ones the wrapper accepts,
/// mapping each to `Self::Value::from(Kind)` after skipping nested content.
macro_rules! other_kinds {
    ($($method:ident),*) => { $( other_kinds!(@one $method); )* };
    (@one bool) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> { Ok(Kind::Bool.into()) }
    };
    (@one number) => {
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> { Ok(Kind::Number.into()) }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> { Ok(Kind::Number.into()) }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> { Ok(Kind::Number.into()) }
    };
    (@one string) => {
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> { Ok(Kind::String.into()) }
    };
    (@one null) => {
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> { Ok(Kind::Null.into()) }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> { Ok(Kind::Null.into()) }
    };
    (@one array) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Kind::Array.into())
        }
    };
    (@one object) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Kind::Object.into())
        }
    };
}

/// A scalar field: a string (borrowed when possible), a number (kept as its text), a boolean,
/// or a record of anything else. `Missing` is the default for absent keys.
#[derive(Debug, Default, Clone)]
pub(crate) enum Scalar<'a> {
    #[default]
    Missing,
    Str(Cow<'a, str>),
    Num(String),
    Bool(bool),
    Other(Kind),
}

impl<'a> Scalar<'a> {
    /// The value as text: strings as they are, numbers as written; nothing else.
    pub(crate) fn text(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            Scalar::Num(n) => Some(n),
            _ => None,
        }
    }

    /// Like [`Scalar::text`], but moves the string out.
    pub(crate) fn into_text(self) -> Option<Cow<'a, str>> {
        match self {
            Scalar::Str(s) => Some(s),
            Scalar::Num(n) => Some(Cow::Owned(n)),
            _ => None,
        }
    }

    /// The text when it is not empty.
    pub(crate) fn non_empty(&self) -> Option<&str> {
        self.text().filter(|s| !s.is_empty())
    }

    /// The JSON type met, `None` when the key was absent.
    pub(crate) fn kind(&self) -> Option<Kind> {
        match self {
            Scalar::Missing => None,
            Scalar::Str(_) => Some(Kind::String),
            Scalar::Num(_) => Some(Kind::Number),
            Scalar::Bool(_) => Some(Kind::Bool),
            Scalar::Other(kind) => Some(*kind),
        }
    }
}

impl From<Kind> for Scalar<'_> {
    fn from(kind: Kind) -> Self {
        Scalar::Other(kind)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ScalarVisitor<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Num(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::Num(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Num(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool(v))
            }
            other_kinds!(null, array, object);
        }
        deserializer.deserialize_any(ScalarVisitor(PhantomData))
    }
}

/// A field expected to hold an object `T`.
#[derive(Debug, Default)]
pub(crate) enum Obj<T> {
    #[default]
    Missing,
    Object(T),
    Other(Kind),
}

impl<T> Obj<T> {
    pub(crate) fn as_object(&self) -> Option<&T> {
        match self {
            Obj::Object(value) => Some(value),
            _ => None,
        }
    }
}

impl<T> From<Kind> for Obj<T> {
    fn from(kind: Kind) -> Self {
        Obj::Other(kind)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Obj::Object)
            }
            other_kinds!(bool, number, string, null, array);
        }
        deserializer.deserialize_any(ObjVisitor(PhantomData))
    }
}

/// A field expected to hold an array of `T`.
#[derive(Debug, Default)]
pub(crate) enum List<T> {
    #[default]
    Missing,
    Items(Vec<T>),
    Other(Kind),
}

impl<T> List<T> {
    /// The items; an absent or mistyped field reads as empty.
    pub(crate) fn items(&self) -> &[T] {
        match self {
            List::Items(items) => items,
            _ => &[],
        }
    }

    pub(crate) fn into_items(self) -> Vec<T> {
        match self {
            List::Items(items) => items,
            _ => Vec::new(),
        }
    }

    /// The JSON type met, `None` when the key was absent.
    pub(crate) fn kind(&self) -> Option<Kind> {
        match self {
            List::Missing => None,
            List::Items(_) => Some(Kind::Array),
            List::Other(kind) => Some(*kind),
        }
    }
}

impl<T> From<Kind> for List<T> {
    fn from(kind: Kind) -> Self {
        List::Other(kind)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(List::Items(items))
            }
            other_kinds!(bool, number, string, null, object);
        }
        deserializer.deserialize_any(ListVisitor(PhantomData))
    }
}

/// Only the JSON type of a value; its content is skipped without allocating.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KindOnly(pub(crate) Option<Kind>);

impl From<Kind> for KindOnly {
    fn from(kind: Kind) -> Self {
        KindOnly(Some(kind))
    }
}

impl<'de> Deserialize<'de> for KindOnly {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KindVisitor;
        impl<'de> Visitor<'de> for KindVisitor {
            type Value = KindOnly;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            other_kinds!(bool, number, string, null, array, object);
        }
        deserializer.deserialize_any(KindVisitor)
    }
}

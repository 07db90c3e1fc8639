//! One registry type for every kind of option named `Name[k=v,...]` on the command line: the plug-ins
//! (schedulers, cache policies, prefetchers, predictors, routers) and the run's other choices (arrival
//! processes, adapter models, length rules, real-execution backends). An option is an `Entry` (name,
//! one-line description, parameters with their defaults, properties, and a constructor) in its kind's
//! `Registry`; `sim policies` lists every kind. A plug-in kind makes a trait object, a choice kind a value
//! (`Kind::Made` may be sized).
//!
//! A parameter's default is declared once, in `Entry::params`; the constructor reads values through
//! `Params::get`, which falls back to that declaration, rejects a parameter the entry does not declare, and
//! records every value so the run can print the full spec it used (`Params::describe`).

use std::fmt::Display;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::spec::Spec;

/// A kind of plug-in: what its constructor makes and from what.
pub trait Kind: 'static {
    /// What an entry builds, e.g. `dyn Scheduler`.
    type Made: ?Sized;
    /// What the constructor is given, e.g. the policy context.
    type Ctx<'a>;
    /// The kind's name in messages, e.g. "scheduler".
    const NAME: &'static str;
}

/// A parameter an entry accepts, with its default (as it would be written on the command line).
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    pub default: &'static str,
    pub about: &'static str,
}

impl Param {
    pub const fn new(name: &'static str, default: &'static str, about: &'static str) -> Param {
        Param {
            name,
            default,
            about,
        }
    }

    /// A parameter with no default value: absent means something the `about` says (read with
    /// `Params::given`).
    pub const fn optional(name: &'static str, about: &'static str) -> Param {
        Param {
            name,
            default: "",
            about,
        }
    }
}

/// What a plug-in declares about itself, for the conformance suite and `sim policies`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Props {
    /// Every admissible request is eventually admitted under sustained load (a bound the conformance suite
    /// checks). A deliberately unfair baseline (e.g. LIFO) declares false.
    pub starvation_free: bool,
}

impl Props {
    pub const DEFAULT: Props = Props {
        starvation_free: true,
    };
}

pub type BuildFn<K> =
    for<'a, 'b> fn(&'b mut Params, &'b <K as Kind>::Ctx<'a>) -> Result<Box<<K as Kind>::Made>>;

pub struct Entry<K: Kind> {
    pub name: &'static str,
    pub about: &'static str,
    pub params: &'static [Param],
    pub props: Props,
    pub build: BuildFn<K>,
}

pub struct Registry<K: Kind> {
    pub entries: &'static [Entry<K>],
}

/// A built plug-in and the full spec it was built with (every parameter's value).
pub struct Built<T: ?Sized> {
    pub made: Box<T>,
    pub spec: String,
}

impl<K: Kind> Registry<K> {
    pub fn find(&self, name: &str) -> Result<&Entry<K>> {
        self.entries.iter().find(|e| e.name == name).ok_or_else(|| {
            Error::msg(format!(
                "unknown {} '{name}'; valid: {}",
                K::NAME,
                self.names().join(", ")
            ))
        })
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.name).collect()
    }

    /// Builds the plug-in `text` (`Name[k=v,...]`) names.
    pub fn build(&self, text: &str, ctx: &K::Ctx<'_>) -> Result<Built<K::Made>> {
        let spec = Spec::parse(text)?;
        let entry = self.find(&spec.name)?;
        let mut params = Params {
            spec,
            decl: entry.params,
            shown: Vec::new(),
        };
        let made = (entry.build)(&mut params, ctx)?;
        params.finish()?;
        Ok(Built {
            made,
            spec: params.describe(),
        })
    }

    /// Checks `text` names an entry with known parameters (without building it).
    pub fn check(&self, text: &str) -> Result<()> {
        let spec = Spec::parse(text)?;
        let entry = self.find(&spec.name)?;
        Params {
            spec,
            decl: entry.params,
            shown: Vec::new(),
        }
        .finish_unread()
    }

    /// Every entry with its description, parameters and defaults (`sim policies`).
    pub fn help(&self) -> String {
        let mut o = String::new();
        let width = self
            .entries
            .iter()
            .map(|e| e.name.len())
            .max()
            .unwrap_or(0)
            .max(10)
            + 2;
        for e in self.entries {
            o += &format!("  {:<width$}{}\n", e.name, e.about);
            if !e.props.starvation_free {
                o += "      (not starvation-free)\n";
            }
            for p in e.params {
                let kv = if p.default.is_empty() {
                    format!("{} (optional)", p.name)
                } else {
                    format!("{} = {}", p.name, p.default)
                };
                o += format!("      {kv:<21} {}", p.about).trim_end();
                o += "\n";
            }
        }
        o
    }
}

/// The parameters of one spec, read by an entry's constructor.
pub struct Params {
    spec: Spec,
    decl: &'static [Param],
    /// (name, value as displayed) in the order read.
    shown: Vec<(&'static str, String)>,
}

impl Params {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    fn declared(&self, key: &str) -> &'static Param {
        self.decl
            .iter()
            .find(|p| p.name == key)
            .unwrap_or_else(|| panic!("{}: parameter '{key}' is not declared", self.spec.name))
    }

    /// The value of `key`: given in the spec, or the declared default.
    pub fn get<T: FromStr + Display>(&mut self, key: &str) -> Result<T> {
        let p = self.declared(key);
        let given = self.spec.take_str(key);
        let text = given.as_deref().unwrap_or(p.default);
        let v: T = text.parse().map_err(|_| {
            Error::msg(format!(
                "{}: parameter '{key}' has bad value '{text}'",
                self.spec.name
            ))
        })?;
        self.shown.push((p.name, v.to_string()));
        Ok(v)
    }

    /// The value of an optional parameter (`Param::optional`), as given; `None` when absent.
    pub fn given(&mut self, key: &str) -> Option<String> {
        let p = self.declared(key);
        let v = self.spec.take_str(key)?;
        self.shown.push((p.name, v.clone()));
        Some(v)
    }

    /// An error naming this spec.
    pub fn bad(&self, why: impl Display) -> Error {
        Error::msg(format!("{}: {why}", self.spec.name))
    }

    fn finish(&self) -> Result<()> {
        let known: Vec<&str> = self.decl.iter().map(|p| p.name).collect();
        self.spec.finish(&known)
    }

    fn finish_unread(mut self) -> Result<()> {
        for p in self.decl {
            self.spec.take_str(p.name);
        }
        self.finish()
    }

    /// `name` or `name[k=v,...]` with every value read, in the order read.
    pub fn describe(&self) -> String {
        if self.shown.is_empty() {
            return self.spec.name.clone();
        }
        let kv: Vec<String> = self.shown.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}[{}]", self.spec.name, kv.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Thing {
        fn value(&self) -> f64;
    }
    struct Num(f64);
    impl Thing for Num {
        fn value(&self) -> f64 {
            self.0
        }
    }
    struct ThingKind;
    impl Kind for ThingKind {
        type Made = dyn Thing;
        type Ctx<'a> = f64;
        const NAME: &'static str = "thing";
    }
    fn build(p: &mut Params, scale: &f64) -> Result<Box<dyn Thing>> {
        let x: f64 = p.get("x")?;
        if x < 0.0 {
            return Err(p.bad("x must be >= 0"));
        }
        Ok(Box::new(Num(x * scale)))
    }
    const REG: Registry<ThingKind> = Registry {
        entries: &[Entry {
            name: "num",
            about: "a number",
            params: &[Param::new("x", "1.50", "the number")],
            props: Props::DEFAULT,
            build,
        }],
    };

    #[test]
    fn defaults_are_declared_once_and_specs_are_described_in_full() {
        let b = REG.build("num", &2.0).unwrap();
        assert_eq!(b.made.value(), 3.0);
        assert_eq!(b.spec, "num[x=1.5]");
        assert_eq!(REG.build("num[x=4]", &1.0).unwrap().made.value(), 4.0);
        let e = |t: &str| REG.build(t, &1.0).err().unwrap().to_string();
        assert_eq!(e("nun"), "unknown thing 'nun'; valid: num");
        assert!(e("num[y=1]").contains("unknown parameter 'y'"));
        assert_eq!(e("num[x=-1]"), "num: x must be >= 0");
        assert!(e("num[x=a]").contains("bad value 'a'"));
        REG.check("num[x=2]").unwrap();
        assert!(REG.check("num[z=2]").is_err());
        assert!(REG.help().contains("x = 1.50"));
    }
}

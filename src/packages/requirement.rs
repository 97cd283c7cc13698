//! The part of PEP 508 that `install_package` accepts: `name [extras] version-specifiers`, with
//! the versions checked against PEP 440. URLs, paths and environment markers are refused before
//! this parser runs (see `validate_spec`), so this is the whole remaining grammar, not a subset
//! that lets odd strings through.
//!
//! Grammar (PEP 508 "Grammar", PEP 440 "Version specifiers"; whitespace is spaces only, control
//! characters are refused earlier):
//!
//! ```text
//! requirement := name ws* extras? ws* specifiers? ws*
//! name        := [A-Za-z0-9] ([A-Za-z0-9._-]* [A-Za-z0-9])?
//! extras      := '[' ws* (name ws* (',' ws* name ws*)*)? ']'
//! specifiers  := '(' ws* clauses ws* ')' | clauses
//! clauses     := clause (ws* ',' ws* clause)* (ws* ',')?
//! clause      := ('~=' | '==' | '!=' | '<=' | '>=' | '<' | '>') ws* version
//!              | '===' ws* arbitrary
//! ```
//!
//! and a version is PEP 440's public version with an optional local label, in any of the
//! non-normalized spellings PEP 440 says installers accept ("Normalization": case, `v` prefix,
//! `-`/`_`/`.` separators, `alpha`/`beta`/`pre`/`preview`/`rev`/`r` spellings, implicit numbers).

/// One version clause's shape, for the rules that depend on the operator.
struct Version {
    release_parts: usize,
    local: bool,
    wildcard: bool,
}

/// A byte cursor over an ASCII string; every read is bounds-checked.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor {
            s: s.as_bytes(),
            i: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn eat_str(&mut self, lit: &str) -> bool {
        let end = self.i + lit.len();
        match self.s.get(self.i..end) {
            Some(got) if got.eq_ignore_ascii_case(lit.as_bytes()) => {
                self.i = end;
                true
            }
            _ => false,
        }
    }

    fn skip_ws(&mut self) {
        while self.eat(b' ') {}
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        // ASCII was checked by the caller; a slice of ASCII bytes is valid UTF-8.
        std::str::from_utf8(self.s.get(start..self.i).unwrap_or_default()).unwrap_or_default()
    }

    fn rest(&self) -> &'a str {
        std::str::from_utf8(self.s.get(self.i..).unwrap_or_default()).unwrap_or_default()
    }
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// A PEP 508 name: letters and digits, with `.`, `_`, `-` only inside.
fn name<'a>(c: &mut Cursor<'a>, what: &str) -> Result<&'a str, String> {
    let n = c.take_while(is_name_char);
    let ok = n.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && n.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(n)
    } else if n.is_empty() {
        Err(format!("expected {what} at {:?}", c.rest()))
    } else {
        Err(format!(
            "{what} {n:?} must start and end with a letter or digit"
        ))
    }
}

/// Parses `spec` and returns its name as written, or what is wrong with it.
pub fn parse(spec: &str) -> Result<&str, String> {
    if !spec.is_ascii() {
        return Err("not ASCII".into());
    }
    let mut c = Cursor::new(spec);
    let pkg = name(&mut c, "a package name")?;
    c.skip_ws();
    if c.eat(b'[') {
        extras(&mut c)?;
        c.skip_ws();
    }
    if c.at_end() {
        return Ok(pkg);
    }
    if c.eat(b'(') {
        c.skip_ws();
        clauses(&mut c)?;
        c.skip_ws();
        if !c.eat(b')') {
            return Err(format!("expected `)` at {:?}", c.rest()));
        }
    } else {
        clauses(&mut c)?;
    }
    c.skip_ws();
    if c.at_end() {
        Ok(pkg)
    } else {
        Err(format!(
            "unexpected {:?} after the version specifiers",
            c.rest()
        ))
    }
}

fn extras(c: &mut Cursor) -> Result<(), String> {
    c.skip_ws();
    if c.eat(b']') {
        return Ok(());
    }
    loop {
        name(c, "an extra's name")?;
        c.skip_ws();
        if c.eat(b']') {
            return Ok(());
        }
        if !c.eat(b',') {
            return Err(format!(
                "expected `,` or `]` in the extras at {:?}",
                c.rest()
            ));
        }
        c.skip_ws();
    }
}

fn clauses(c: &mut Cursor) -> Result<(), String> {
    loop {
        clause(c)?;
        c.skip_ws();
        if !c.eat(b',') {
            return Ok(());
        }
        c.skip_ws();
        // packaging (pip's parser) accepts one trailing comma: `x>=1.0,`, `x (>=1.0, )`.
        if c.at_end() || c.peek() == Some(b')') {
            return Ok(());
        }
    }
}

fn clause(c: &mut Cursor) -> Result<(), String> {
    // Longest operators first: `===` before `==`, `<=` before `<`.
    const OPS: [&str; 8] = ["===", "~=", "==", "!=", "<=", ">=", "<", ">"];
    let Some(op) = OPS.into_iter().find(|op| c.eat_str(op)) else {
        return Err(format!(
            "expected a version operator (==, !=, <=, >=, <, >, ~=, ===) at {:?}",
            c.rest()
        ));
    };
    c.skip_ws();
    let text = c.take_while(|b| !matches!(b, b' ' | b',' | b')' | b'(' | b'[' | b']'));
    if text.is_empty() {
        return Err(format!("`{op}` needs a version"));
    }
    if op == "===" {
        // Arbitrary equality compares strings; anything without separators is allowed.
        return Ok(());
    }
    let v = version(text).map_err(|e| format!("{text:?} is not a PEP 440 version: {e}"))?;
    let equality = matches!(op, "==" | "!=");
    if v.wildcard && !equality {
        return Err(format!(
            "`.*` is only allowed with == and != (got `{op}{text}`)"
        ));
    }
    if v.local && !equality {
        return Err(format!(
            "a local version label (`+...`) is only allowed with == and != (got `{op}{text}`)"
        ));
    }
    if op == "~=" && v.release_parts < 2 {
        return Err(format!(
            "`~=` needs at least two release numbers, e.g. ~=1.4 (got `~={text}`)"
        ));
    }
    Ok(())
}

fn digits<'a>(c: &mut Cursor<'a>) -> &'a str {
    c.take_while(|b| b.is_ascii_digit())
}

fn sep(c: &mut Cursor) -> bool {
    c.eat(b'.') || c.eat(b'-') || c.eat(b'_')
}

/// Tries `[sep] word [sep] [number]` for one of `words`; restores the cursor if none matches.
fn labelled(c: &mut Cursor, words: &[&str], number_required: bool) -> bool {
    let start = c.i;
    sep(c);
    if words.iter().any(|w| c.eat_str(w)) {
        let before = c.i;
        sep(c);
        if !digits(c).is_empty() {
            return true;
        }
        c.i = before;
        if !number_required {
            return true;
        }
    }
    c.i = start;
    false
}

/// PEP 440 "Appendix B" shape: `v? (N!)? N(.N)* .*` (a prefix, for `==`/`!=` only) or
/// `v? (N!)? N(.N)* pre? post? dev? (+local)?`.
fn version(text: &str) -> Result<Version, String> {
    let mut c = Cursor::new(text);
    c.eat_str("v");
    let first = digits(&mut c);
    if first.is_empty() {
        return Err("it must start with a number".into());
    }
    let mut release_parts = 1;
    if c.eat(b'!') && digits(&mut c).is_empty() {
        return Err("an epoch (`N!`) must be followed by the release number".into());
    }
    loop {
        let at = c.i;
        if c.eat(b'.') {
            if !digits(&mut c).is_empty() {
                release_parts += 1;
                continue;
            }
            c.i = at;
        }
        break;
    }
    if c.eat_str(".*") {
        return if c.at_end() {
            Ok(Version {
                release_parts,
                local: false,
                wildcard: true,
            })
        } else {
            Err("`.*` must end the version".into())
        };
    }
    // Pre-release, longest spellings first so `preview` is not read as `pre` + junk.
    labelled(
        &mut c,
        &["preview", "alpha", "beta", "pre", "rc", "a", "b", "c"],
        false,
    );
    // Post-release: `-N` or `[sep](post|rev|r)[sep][N]`.
    let at = c.i;
    let implicit_post = c.eat(b'-') && !digits(&mut c).is_empty();
    if !implicit_post {
        c.i = at;
        labelled(&mut c, &["post", "rev", "r"], false);
    }
    labelled(&mut c, &["dev"], false);
    let mut local = false;
    if c.eat(b'+') {
        local = true;
        loop {
            if c.take_while(|b| b.is_ascii_alphanumeric()).is_empty() {
                return Err(
                    "a local label (`+...`) is letters and digits separated by `.`, `-` or `_`"
                        .into(),
                );
            }
            if !sep(&mut c) {
                break;
            }
        }
    }
    if !c.at_end() {
        return Err(format!("unexpected {:?}", c.rest()));
    }
    Ok(Version {
        release_parts,
        local,
        wildcard: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_pip_accepts() {
        for s in [
            "a",
            "A1",
            "zope.interface",
            "Foo_Bar-baz.qux",
            "requests[socks]",
            "requests [ socks , security ]",
            "requests[]",
            "pandas>=2.0",
            "pandas >= 2.0 , < 3",
            "numpy>=1.26,<3",
            "pandas (>=2.0,<3)",
            "scikit-learn~=1.4",
            "scikit-learn~=1.4.2",
            "x==1.0.*",
            "x!=2.*",
            "x==1!2.0",
            "x==1.0a1",
            "x==1.0-alpha.2",
            "x==1.0rc1",
            "x==1.0.post1",
            "x==1.0-1",
            "x==1.0.rev2",
            "x==1.0.dev3",
            "x==1.0a1.post2.dev3",
            "x==1.0+ubuntu.1",
            "x==V1.0",
            "x==1.0b",
            "x===foobar",
            "x<2.0.dev0",
            "x>1",
            "x>=1.0,",
            "x (>=1.0 , )",
        ] {
            assert!(parse(s).is_ok(), "{s}: {:?}", parse(s));
        }
        assert_eq!(parse("Foo_Bar [x] >=1").ok(), Some("Foo_Bar"));
    }

    #[test]
    fn refuses_what_is_not_pep_508() {
        for s in [
            "",
            "-x",
            "x-",
            ".x",
            "x extra",
            "x==",
            "x==1.0 2.0",
            "x=1.0",
            "x=>1.0",
            "x>=,1",
            "x>=1,,<2",
            "x, ",
            "x[",
            "x[a",
            "x[a,]",
            "x[-a]",
            "x (>=1.0",
            "x >=1.0)",
            "x>=1.0.*",
            "x~=1",
            "x~=1.*",
            "x>=1.0+local",
            "x==1.0.dev1.*",
            "x==1.0+abc.*",
            "x==1.0+",
            "x==1.0+a..b",
            "x==1!",
            "x==1.0.*.1",
            "x==1.0a1.*",
            "x!=1.0.post1.*",
            "x==1.0foo",
            "x==abc",
            "x==1.0;",
            "x==\u{e9}",
        ] {
            assert!(parse(s).is_err(), "{s:?} was accepted");
        }
    }

    #[test]
    fn survives_extreme_input() {
        let long = format!("x{}", "==1".repeat(10_000));
        assert!(parse(&long).is_err());
        let deep = format!("x{}", "(".repeat(10_000));
        assert!(parse(&deep).is_err());
        let many = format!("x>=1{}", ",<2".repeat(10_000));
        assert!(parse(&many).is_ok());
    }
}

//! Distinguished names (RFC 4514), as far as comparing them needs: `CN=Ops\, Night,OU=Groups`
//! is one RDN whose value holds a comma, `cn=ops,ou=groups` and `CN=Ops, OU=Groups` are the same
//! name. Values compare ignoring case and runs of spaces (the case-ignore match of the
//! attributes that name groups and people).

/// One attribute-value assertion of an RDN: the type in lower case, the value unescaped and
/// normalized.
type Ava = (String, String);

/// A parsed DN: its RDNs, the entry's own first (each RDN's assertions sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dn(Vec<Vec<Ava>>);

impl Dn {
    /// Whether this entry is directly below `base`.
    pub fn is_child_of(&self, base: &Dn) -> bool {
        self.0.len() == base.0.len() + 1 && self.0.ends_with(&base.0)
    }

    /// The value of the entry's own RDN when it is a single `cn` (`cn=operators,…` →
    /// `operators`), normalized.
    pub fn cn(&self) -> Option<&str> {
        match self.0.first()?.as_slice() {
            [(kind, v)] if kind == "cn" => Some(v.as_str()),
            _ => None,
        }
    }
}

/// A value as it compares: lower case, spaces trimmed and runs of spaces collapsed.
pub fn normalize_value(v: &str) -> String {
    v.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Parses `s`; `None` when it is not a DN (empty, an RDN without `=`, a bad escape, not UTF-8).
pub fn parse(s: &str) -> Option<Dn> {
    let mut rdns = Vec::new();
    let mut rdn: Vec<Ava> = Vec::new();
    let mut kind = String::new();
    let mut value: Vec<u8> = Vec::new();
    let mut in_value = false;
    let mut bytes = s.bytes().peekable();
    let finish = |kind: &mut String, value: &mut Vec<u8>, rdn: &mut Vec<Ava>| -> Option<()> {
        let k = kind.trim().to_ascii_lowercase();
        let valid_kind = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        let v = String::from_utf8(std::mem::take(value)).ok()?;
        if !valid_kind {
            return None;
        }
        rdn.push((k, normalize_value(&v)));
        kind.clear();
        Some(())
    };
    while let Some(b) = bytes.next() {
        if !in_value {
            match b {
                b'=' => in_value = true,
                b',' | b'+' | b';' | b'\\' => return None,
                _ => kind.push(char::from(b)),
            }
            continue;
        }
        match b {
            b'\\' => {
                let first = bytes.next()?;
                match bytes.peek().copied() {
                    Some(second) if first.is_ascii_hexdigit() && second.is_ascii_hexdigit() => {
                        bytes.next();
                        let hex = [first, second];
                        let text = std::str::from_utf8(&hex).ok()?;
                        value.push(u8::from_str_radix(text, 16).ok()?);
                    }
                    _ => value.push(first),
                }
            }
            b'+' => {
                finish(&mut kind, &mut value, &mut rdn)?;
                in_value = false;
            }
            b',' | b';' => {
                finish(&mut kind, &mut value, &mut rdn)?;
                in_value = false;
                rdn.sort();
                rdns.push(std::mem::take(&mut rdn));
            }
            _ => value.push(b),
        }
    }
    if !in_value {
        return None;
    }
    finish(&mut kind, &mut value, &mut rdn)?;
    rdn.sort();
    rdns.push(rdn);
    Some(Dn(rdns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_name_written_differently_is_equal() {
        let a = parse("CN=Ops Team,OU=Groups, DC=Bank,DC=local").unwrap();
        let b = parse("cn=ops  team,ou=groups,dc=bank,dc=local").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.cn(), Some("ops team"));
    }

    #[test]
    fn escaped_commas_stay_in_the_value() {
        let a = parse(r"CN=Ops\, Night,OU=Groups,DC=bank").unwrap();
        assert_eq!(a.cn(), Some("ops, night"));
        assert_eq!(a.0.len(), 3);
        // Hex escapes (UTF-8 bytes) and the same name written plainly.
        let b = parse(r"cn=\E5\8F\98\E6\9B\B4,ou=groups").unwrap();
        assert_eq!(b, parse("cn=变更,ou=groups").unwrap());
    }

    #[test]
    fn directly_below_a_base_and_not_elsewhere() {
        let base = parse("ou=groups,dc=bank").unwrap();
        assert!(
            parse("cn=ops,ou=groups,dc=bank")
                .unwrap()
                .is_child_of(&base)
        );
        assert!(
            !parse("cn=ops,ou=x,ou=groups,dc=bank")
                .unwrap()
                .is_child_of(&base)
        );
        assert!(
            !parse("cn=ops,ou=people,dc=bank")
                .unwrap()
                .is_child_of(&base)
        );
        assert!(!base.is_child_of(&base));
        // A value that merely ends like the base is not below it.
        assert!(
            !parse(r"cn=ops\,ou=groups,dc=bank,dc=x")
                .unwrap()
                .is_child_of(&base)
        );
    }

    #[test]
    fn what_is_not_a_dn() {
        for bad in [
            "",
            "operators",
            "cn=ops,",
            ",cn=ops",
            "cn=ops\\",
            "=x",
            "c n=x",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        assert!(parse("cn=a+uid=b,dc=x").is_some());
    }
}

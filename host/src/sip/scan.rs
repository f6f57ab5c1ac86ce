//! Low-level lexing shared by the header parsers (RFC 3261 §25.1: tokens,
//! LWS, quoted strings, comma-separated lists).

/// RFC 3261 `token` characters.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// True when every byte is a token character and there is at least one.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_char(b))
}

/// Linear white space after unfolding: SP, HTAB, and the CR/LF of a fold.
pub fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// `s` without leading and trailing LWS.
pub fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_lws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_lws(b)).map_or(start, |p| p + 1);
    &s[start..end]
}

/// Offset just past the quoted string opening at `s[0]` (which must be `"`),
/// honouring `\` escapes; `None` when it is never closed.
pub fn skip_quoted(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Offset of the first top-level comma of `s` (outside quotes and `<...>`),
/// or `s.len()` when there is none. `None` when a quote or angle bracket is
/// left open.
pub fn element_end(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut in_angle = false;
    while i < s.len() {
        match s[i] {
            b'"' => {
                i += skip_quoted(&s[i..])?;
                continue;
            }
            b'<' => in_angle = true,
            b'>' => in_angle = false,
            b',' if !in_angle => return Some(i),
            _ => {}
        }
        i += 1;
    }
    (!in_angle).then_some(s.len())
}

/// Split a header value at top-level commas, yielding `(start, end)` offsets
/// of each element, untrimmed. `None` when a quote or bracket is left open.
pub fn split_commas(s: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = start + element_end(&s[start..])?;
        out.push((start, end));
        if end == s.len() {
            return Some(out);
        }
        start = end + 1;
    }
}

/// Parse a decimal number made only of digits, without overflow.
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u32 = 0;
    for &d in s {
        n = n.checked_mul(10)?.checked_add(u32::from(d - b'0'))?;
    }
    Some(n)
}

/// A `;name[=value]` parameter list: iterate `(name, value)` pairs with LWS
/// around `;` and `=` removed. Quoted values keep their quotes.
pub struct Params<'a> {
    rest: &'a [u8],
}

impl<'a> Params<'a> {
    /// `s` starts at (or before, after LWS) the first `;`.
    pub fn new(s: &'a [u8]) -> Self {
        Params { rest: s }
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let s = trim(self.rest);
            let s = s.strip_prefix(b";")?;
            // Find the end of this parameter: the next `;` outside quotes.
            let mut i = 0;
            while i < s.len() && s[i] != b';' {
                if s[i] == b'"' {
                    i += skip_quoted(&s[i..]).unwrap_or(s.len() - i);
                } else {
                    i += 1;
                }
            }
            let (param, rest) = s.split_at(i);
            self.rest = rest;
            let param = trim(param);
            if param.is_empty() {
                continue;
            }
            return Some(match param.iter().position(|&b| b == b'=') {
                Some(eq) => (trim(&param[..eq]), Some(trim(&param[eq + 1..]))),
                None => (param, None),
            });
        }
    }
}

/// Find a parameter by name (case-insensitive).
pub fn find_param<'a>(params: &'a [u8], name: &[u8]) -> Option<Option<&'a [u8]>> {
    Params::new(params).find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_respect_quotes_and_angles() {
        let s = br#""a,b" <sip:x;p=1,2>, <sip:y>"#;
        let parts = split_commas(s).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(trim(&s[parts[1].0..parts[1].1]), b"<sip:y>");
        assert!(split_commas(b"\"open").is_none());
    }

    #[test]
    fn params_with_lws() {
        let p: Vec<_> = Params::new(b" ;  tag    = 1918181833n ; lr").collect();
        assert_eq!(p, vec![(&b"tag"[..], Some(&b"1918181833n"[..])), (&b"lr"[..], None)]);
    }

    #[test]
    fn u32_overflow_is_none() {
        assert_eq!(parse_u32(b"0009"), Some(9));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"-1"), None);
    }
}

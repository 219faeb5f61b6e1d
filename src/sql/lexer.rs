//! A lexer for PostgreSQL's SQL syntax, covering what decides where a token
//! starts and ends: `'...'` and `E'...'` strings, `"..."` identifiers,
//! `$tag$...$tag$` dollar quotes, `$1` parameters, `--` and nested `/* */`
//! comments, words, and the statement separator `;`.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A keyword or unquoted identifier.
    Word,
    /// A `"quoted"` identifier.
    QuotedIdent,
    /// A string constant of any form.
    String,
    /// A number or a `$n` parameter.
    Number,
    Semicolon,
    /// Any other punctuation or operator character.
    Punct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn text<'a>(&self, sql: &'a [u8]) -> &'a [u8] {
        &sql[self.start..self.end]
    }

    /// The name an identifier token stands for, as PostgreSQL folds it:
    /// an unquoted word in lower case, a quoted one as written.
    pub fn identifier(&self, sql: &[u8]) -> Option<String> {
        let text = std::str::from_utf8(self.text(sql)).ok()?;
        match self.kind {
            Kind::Word => Some(text.to_lowercase()),
            Kind::QuotedIdent => Some(text[1..text.len() - 1].replace("\"\"", "\"")),
            _ => None,
        }
    }

    /// True when the token is the word `word`, in any case.
    pub fn is_word(&self, sql: &[u8], word: &str) -> bool {
        self.kind == Kind::Word && self.text(sql).eq_ignore_ascii_case(word.as_bytes())
    }
}

/// True when one of `words` (lower case) occurs anywhere in `sql`, in any
/// case, inside strings and comments too: a quick test that rules out SQL
/// that cannot hold a statement starting with or naming one of them, before
/// tokenizing it.
pub fn mentions_any(sql: &[u8], words: &[&str]) -> bool {
    // A bit per possible first byte, case folded (collisions between
    // non-letters only cost a comparison).
    let bit = |byte: u8| 1u64 << ((byte | 0x20) & 63);
    let starts = words
        .iter()
        .fold(0u64, |mask, word| mask | bit(word.as_bytes()[0]));
    (0..sql.len()).any(|at| {
        starts & bit(sql[at]) != 0
            && words.iter().any(|word| {
                sql[at..]
                    .get(..word.len())
                    .is_some_and(|text| text.eq_ignore_ascii_case(word.as_bytes()))
            })
    })
}

/// The tokens of `sql`, or `None` when a string, identifier or comment is not
/// closed (the engine will report the syntax error).
pub fn tokenize(sql: &[u8]) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < sql.len() {
        let c = sql[i];
        let next = sql.get(i + 1).copied();
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'-' if next == Some(b'-') => {
                i = sql[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(sql.len(), |p| i + p);
                continue;
            }
            b'/' if next == Some(b'*') => {
                i = block_comment_end(sql, i)?;
                continue;
            }
            b'\'' => {
                i = quoted_end(sql, i, b'\'', false)?;
                Kind::String
            }
            b'"' => {
                i = quoted_end(sql, i, b'"', false)?;
                Kind::QuotedIdent
            }
            b'E' | b'e' if next == Some(b'\'') => {
                i = quoted_end(sql, i + 1, b'\'', true)?;
                Kind::String
            }
            b'B' | b'b' | b'X' | b'x' | b'N' | b'n' if next == Some(b'\'') => {
                i = quoted_end(sql, i + 1, b'\'', false)?;
                Kind::String
            }
            b'U' | b'u' if next == Some(b'&') && matches!(sql.get(i + 2), Some(b'\'' | b'"')) => {
                let quote = sql[i + 2];
                i = quoted_end(sql, i + 2, quote, false)?;
                if quote == b'"' {
                    Kind::QuotedIdent
                } else {
                    Kind::String
                }
            }
            b'$' => match dollar_quote_end(sql, i) {
                Some(DollarToken::Quote(end)) => {
                    i = end;
                    Kind::String
                }
                Some(DollarToken::Param(end)) => {
                    i = end;
                    Kind::Number
                }
                None => return None,
            },
            b';' => {
                i += 1;
                Kind::Semicolon
            }
            c if is_ident_start(c) => {
                i += 1;
                while i < sql.len() && is_ident_char(sql[i]) {
                    i += 1;
                }
                Kind::Word
            }
            c if c.is_ascii_digit() || (c == b'.' && next.is_some_and(|n| n.is_ascii_digit())) => {
                i += 1;
                while i < sql.len()
                    && (sql[i].is_ascii_alphanumeric() || sql[i] == b'.' || sql[i] == b'_')
                {
                    i += 1;
                }
                Kind::Number
            }
            _ => {
                i += 1;
                Kind::Punct
            }
        };
        tokens.push(Token {
            kind,
            start,
            end: i,
        });
    }
    Some(tokens)
}

/// Splits tokens into statements at `;`, dropping empty statements.
pub fn statements(tokens: &[Token]) -> Vec<&[Token]> {
    tokens
        .split(|token| token.kind == Kind::Semicolon)
        .filter(|statement| !statement.is_empty())
        .collect()
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// The end (exclusive) of a quoted string or identifier opening at `open`;
/// a doubled quote stands for one. With `backslashes`, `\` escapes the next
/// byte (`E'...'` strings).
fn quoted_end(sql: &[u8], open: usize, quote: u8, backslashes: bool) -> Option<usize> {
    let mut i = open + 1;
    while i < sql.len() {
        match sql[i] {
            b'\\' if backslashes => i += 2,
            b if b == quote => {
                if sql.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return Some(i + 1);
                }
            }
            _ => i += 1,
        }
    }
    None
}

fn block_comment_end(sql: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut i = open;
    while i + 1 < sql.len() {
        match (sql[i], sql[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

enum DollarToken {
    Quote(usize),
    Param(usize),
}

fn dollar_quote_end(sql: &[u8], open: usize) -> Option<DollarToken> {
    let rest = &sql[open + 1..];
    if rest.first().is_some_and(u8::is_ascii_digit) {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        return Some(DollarToken::Param(open + 1 + digits));
    }
    let tag_len = rest
        .iter()
        .take_while(|&&b| is_ident_start(b) || b.is_ascii_digit())
        .count();
    if rest.get(tag_len) != Some(&b'$') {
        // A lone `$` is an operator character in some contexts.
        return Some(DollarToken::Param(open + 1));
    }
    let delimiter = &sql[open..open + tag_len + 2];
    let body_start = open + delimiter.len();
    sql[body_start..]
        .windows(delimiter.len())
        .position(|window| window == delimiter)
        .map(|p| DollarToken::Quote(body_start + p + delimiter.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_find_words_in_any_case_anywhere() {
        assert!(mentions_any(b"RESET ALL", &["set"]));
        assert!(mentions_any(b"select 1; Listen x", &["discard", "listen"]));
        assert!(!mentions_any(
            b"SELECT abalance FROM t WHERE aid = $1",
            &["set", "listen"]
        ));
        assert!(!mentions_any(b"se", &["set"]));
    }

    fn words(sql: &str) -> Vec<String> {
        let tokens = tokenize(sql.as_bytes()).unwrap();
        tokens
            .iter()
            .map(|t| String::from_utf8_lossy(t.text(sql.as_bytes())).into_owned())
            .collect()
    }

    #[test]
    fn strings_identifiers_and_comments_hide_their_contents() {
        assert_eq!(
            words("SELECT 'SET x; y', \"a;b\" -- ; SET\n FROM t /* ; /* nested */ ; */ ;"),
            vec!["SELECT", "'SET x; y'", ",", "\"a;b\"", "FROM", "t", ";"]
        );
    }

    #[test]
    fn escape_strings_and_dollar_quotes() {
        assert_eq!(
            words(r"SELECT E'it\'s; here'"),
            vec!["SELECT", r"E'it\'s; here'"]
        );
        assert_eq!(words("SELECT 'it''s'"), vec!["SELECT", "'it''s'"]);
        assert_eq!(
            words("DO $body$ BEGIN; COMMIT; END $body$; SELECT $1"),
            vec![
                "DO",
                "$body$ BEGIN; COMMIT; END $body$",
                ";",
                "SELECT",
                "$1"
            ]
        );
        assert_eq!(words("SELECT $$a;b$$"), vec!["SELECT", "$$a;b$$"]);
    }

    #[test]
    fn statements_split_at_top_level_semicolons_only() {
        let sql = b"SET a = 'x;y'; ; SELECT 1;";
        let tokens = tokenize(sql).unwrap();
        let statements = statements(&tokens);
        assert_eq!(statements.len(), 2);
        assert!(statements[0][0].is_word(sql, "set"));
        assert!(statements[1][0].is_word(sql, "SELECT"));
    }

    #[test]
    fn unterminated_input_is_reported() {
        assert!(tokenize(b"SELECT 'open").is_none());
        assert!(tokenize(b"SELECT \"open").is_none());
        assert!(tokenize(b"SELECT /* open").is_none());
        assert!(tokenize(b"SELECT $x$ open").is_none());
    }
}

//! Lexer and recursive-descent parser for selector text (grammar in the
//! parent module's docs); produces an [`Expr`] that is not normalised yet.

use std::collections::BTreeSet;

use super::{Expr, SelectorError, MAX_DEPTH};

/// Parses the whole of `text` into an expression; empty text is `all()`.
pub(super) fn parse_expr(text: &str) -> Result<Expr, SelectorError> {
    let tokens = lex(text)?;
    let mut parser = Parser {
        tokens,
        next: 0,
        depth: 0,
    };
    if parser.peek().tok == Tok::End {
        return Ok(Expr::All);
    }
    let e = parser.or()?;
    parser.expect_end()?;
    Ok(e)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    EqEq,
    NotEq,
    Bang,
    AndAnd,
    OrOr,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("{:?}", shorten(w)),
            Tok::Str(s) => format!("string {:?}", shorten(s)),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::Comma => "','".into(),
            Tok::EqEq => "'=='".into(),
            Tok::NotEq => "'!='".into(),
            Tok::Bang => "'!'".into(),
            Tok::AndAnd => "'&&'".into(),
            Tok::OrOr => "'||'".into(),
            Tok::End => "end of selector".into(),
        }
    }
}

/// The start of a long word or string, for error messages.
fn shorten(s: &str) -> String {
    const MAX: usize = 32;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}...")
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: usize,
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

fn lex(text: &str) -> Result<Vec<Token>, SelectorError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let pos = i;
        let two = bytes.get(i + 1).copied();
        let (tok, len) = match (b, two) {
            (b'(', _) => (Tok::LParen, 1),
            (b')', _) => (Tok::RParen, 1),
            (b'{', _) => (Tok::LBrace, 1),
            (b'}', _) => (Tok::RBrace, 1),
            (b',', _) => (Tok::Comma, 1),
            (b'=', Some(b'=')) => (Tok::EqEq, 2),
            (b'!', Some(b'=')) => (Tok::NotEq, 2),
            (b'!', _) => (Tok::Bang, 1),
            (b'&', Some(b'&')) => (Tok::AndAnd, 2),
            (b'|', Some(b'|')) => (Tok::OrOr, 2),
            (b'"' | b'\'', _) => lex_string(text, pos)?,
            _ if is_key_byte(b) => {
                let len = bytes[i..].iter().take_while(|&&c| is_key_byte(c)).count();
                (Tok::Word(text[i..i + len].to_owned()), len)
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('\u{fffd}');
                return Err(SelectorError::BadChar { pos, ch });
            }
        };
        tokens.push(Token { tok, pos });
        i += len;
    }
    tokens.push(Token {
        tok: Tok::End,
        pos: text.len(),
    });
    Ok(tokens)
}

/// Lexes a quoted string starting at `pos`; returns the token and its byte length.
fn lex_string(text: &str, pos: usize) -> Result<(Tok, usize), SelectorError> {
    let quote = text.as_bytes()[pos] as char;
    let body = &text[pos + 1..];
    match body.find(quote) {
        Some(end) => Ok((Tok::Str(body[..end].to_owned()), end + 2)),
        None => Err(SelectorError::UnterminatedString { pos }),
    }
}

// ------------------------------------------------------------------- parsing

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        // The token list always ends with `End`, and `bump` never passes it.
        &self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn peek2(&self) -> &Tok {
        &self.tokens[(self.next + 1).min(self.tokens.len() - 1)].tok
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::End {
            self.next += 1;
        }
        t
    }

    fn unexpected<T>(&self, expected: &'static str) -> Result<T, SelectorError> {
        let t = self.peek();
        Err(SelectorError::Unexpected {
            pos: t.pos,
            expected,
            found: t.tok.describe(),
        })
    }

    fn expect(&mut self, tok: Tok, expected: &'static str) -> Result<(), SelectorError> {
        if self.peek().tok == tok {
            self.bump();
            Ok(())
        } else {
            self.unexpected(expected)
        }
    }

    fn expect_end(&mut self) -> Result<(), SelectorError> {
        self.expect(Tok::End, "'&&', '||' or end of selector")
    }

    fn descend(&mut self) -> Result<(), SelectorError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(SelectorError::TooDeep {
                pos: self.peek().pos,
            });
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, SelectorError> {
        let mut items = vec![self.and()?];
        while self.peek().tok == Tok::OrOr {
            self.bump();
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::All)
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self) -> Result<Expr, SelectorError> {
        let mut items = vec![self.unary()?];
        while self.peek().tok == Tok::AndAnd {
            self.bump();
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::All)
        } else {
            Expr::And(items)
        })
    }

    fn unary(&mut self) -> Result<Expr, SelectorError> {
        match self.peek().tok.clone() {
            Tok::Bang => {
                self.bump();
                self.descend()?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(inner)))
            }
            Tok::LParen => {
                self.bump();
                self.descend()?;
                let inner = self.or()?;
                self.expect(Tok::RParen, "')', '&&' or '||'")?;
                self.depth -= 1;
                Ok(inner)
            }
            Tok::Word(w) if self.peek2() == &Tok::LParen => self.function(&w),
            Tok::Word(key) => {
                self.bump();
                self.comparison(key)
            }
            _ => self.unexpected("a label key, 'has(', 'all(', '!' or '('"),
        }
    }

    fn function(&mut self, name: &str) -> Result<Expr, SelectorError> {
        match name {
            "all" => {
                self.bump();
                self.bump();
                self.expect(Tok::RParen, "')' after 'all('")?;
                Ok(Expr::All)
            }
            "has" => {
                self.bump();
                self.bump();
                let key = self.key("a label key inside 'has('")?;
                self.expect(Tok::RParen, "')' after the key in 'has('")?;
                Ok(Expr::Has(key))
            }
            _ => {
                self.bump();
                self.unexpected("'==', '!=', 'in' or 'not in' (only 'has' and 'all' are functions)")
            }
        }
    }

    fn key(&mut self, expected: &'static str) -> Result<String, SelectorError> {
        match self.peek().tok.clone() {
            Tok::Word(w) => {
                self.bump();
                Ok(w)
            }
            _ => self.unexpected(expected),
        }
    }

    fn comparison(&mut self, key: String) -> Result<Expr, SelectorError> {
        const OPS: &str = "'==', '!=', 'in' or 'not in' after a label key";
        match self.peek().tok.clone() {
            Tok::EqEq => {
                self.bump();
                Ok(Expr::Eq(key, self.string()?))
            }
            Tok::NotEq => {
                self.bump();
                Ok(Expr::Ne(key, self.string()?))
            }
            Tok::Word(w) if w == "in" => {
                self.bump();
                Ok(Expr::In(key, self.set()?))
            }
            Tok::Word(w) if w == "not" && matches!(self.peek2(), Tok::Word(n) if n == "in") => {
                self.bump();
                self.bump();
                Ok(Expr::NotIn(key, self.set()?))
            }
            _ => self.unexpected(OPS),
        }
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        match self.peek().tok.clone() {
            Tok::Str(s) => {
                self.bump();
                Ok(s)
            }
            _ => self.unexpected("a quoted string"),
        }
    }

    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        self.expect(Tok::LBrace, "'{' to start a set of strings")?;
        let mut set = BTreeSet::new();
        if self.peek().tok == Tok::RBrace {
            self.bump();
            return Ok(set);
        }
        loop {
            set.insert(self.string()?);
            match self.bump().tok {
                Tok::Comma => {}
                Tok::RBrace => return Ok(set),
                _ => {
                    self.next -= 1;
                    return self.unexpected("',' or '}' in a set of strings");
                }
            }
        }
    }
}

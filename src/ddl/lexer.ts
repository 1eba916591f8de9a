// Tokenizer for the mvsched DDL. It has to understand enough MySQL lexical structure (strings,
// quoted identifiers, comments) that a keyword or `;` inside any of them is never mistaken for
// structure; everything else that may appear in a raw expression or SELECT only needs a token
// boundary, not a meaning.

export type TokenType =
  /** Bare identifier or keyword: [A-Za-z_][A-Za-z0-9_$]* */
  | 'word'
  /** `backquoted` identifier; `value` holds the unescaped text. */
  | 'quoted'
  /** '...' or "..." string literal. */
  | 'string'
  | 'number'
  /** @user_var / @@system_var, lexed whole so that `@next` is not read as the keyword NEXT. */
  | 'variable'
  /** One of ( ) , . ; */
  | 'punct'
  /** Any other single character (operators and the like). */
  | 'other';

export interface Token {
  type: TokenType;
  /** Exact source text. */
  text: string;
  /** For 'quoted': the identifier without backquotes; otherwise equal to text. */
  value: string;
  /** UTF-16 offsets into the source; end is exclusive. */
  start: number;
  end: number;
}

export interface LexFailure {
  offset: number;
  message: string;
  expected: string[];
  found: string;
}

export type LexResult = { ok: true; tokens: Token[] } | { ok: false; error: LexFailure };

const PUNCT = new Set(['(', ')', ',', '.', ';']);

function isWordStart(c: string): boolean {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c === '_';
}

function isWordPart(c: string): boolean {
  return isWordStart(c) || (c >= '0' && c <= '9') || c === '$';
}

function isDigit(c: string): boolean {
  return c >= '0' && c <= '9';
}

// MySQL treats only ASCII whitespace as a separator; anything else must surface as a token so
// that a stray non-breaking space is reported instead of silently accepted.
function isSpace(c: string): boolean {
  return c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v';
}

export function tokenize(sql: string): LexResult {
  const tokens: Token[] = [];
  const n = sql.length;
  let i = 0;
  const push = (type: TokenType, start: number, end: number, value?: string): void => {
    const text = sql.slice(start, end);
    tokens.push({ type, text, value: value ?? text, start, end });
  };

  while (i < n) {
    const c = sql[i]!;
    const next = sql[i + 1] ?? '';

    if (isSpace(c)) {
      i++;
      continue;
    }

    // MySQL only starts a `--` comment when whitespace or a control character follows, so
    // `1--1` stays an expression.
    if (c === '#' || (c === '-' && next === '-' && (i + 2 >= n || sql.charCodeAt(i + 2) <= 0x20))) {
      while (i < n && sql[i] !== '\n' && sql[i] !== '\r') i++;
      continue;
    }

    if (c === '/' && next === '*') {
      const close = sql.indexOf('*/', i + 2);
      if (close < 0) {
        return fail(i, 'unterminated comment starting here', ['*/']);
      }
      i = close + 2;
      continue;
    }

    if (c === "'" || c === '"') {
      const start = i;
      i++;
      let closed = false;
      while (i < n) {
        const d = sql[i]!;
        if (d === '\\') {
          i += 2;
        } else if (d === c) {
          if (sql[i + 1] === c) {
            i += 2;
          } else {
            i++;
            closed = true;
            break;
          }
        } else {
          i++;
        }
      }
      if (!closed) {
        return fail(start, 'unterminated string literal starting here', [c]);
      }
      push('string', start, i);
      continue;
    }

    if (c === '`') {
      const start = i;
      i++;
      let value = '';
      let closed = false;
      while (i < n) {
        const d = sql[i]!;
        if (d === '`') {
          if (sql[i + 1] === '`') {
            value += '`';
            i += 2;
          } else {
            i++;
            closed = true;
            break;
          }
        } else {
          value += d;
          i++;
        }
      }
      if (!closed) {
        return fail(start, 'unterminated quoted identifier starting here', ['`']);
      }
      push('quoted', start, i, value);
      continue;
    }

    if (isWordStart(c)) {
      const start = i;
      while (i < n && isWordPart(sql[i]!)) i++;
      push('word', start, i);
      continue;
    }

    if (isDigit(c)) {
      // Swallow trailing word characters so that `10AS` can never be split into `10` + `AS`.
      const start = i;
      while (i < n && isDigit(sql[i]!)) i++;
      if (sql[i] === '.' && isDigit(sql[i + 1] ?? '')) {
        i++;
        while (i < n && isDigit(sql[i]!)) i++;
      }
      if ((sql[i] === 'e' || sql[i] === 'E') && (isDigit(sql[i + 1] ?? '') || ((sql[i + 1] === '+' || sql[i + 1] === '-') && isDigit(sql[i + 2] ?? '')))) {
        i += 2;
        while (i < n && isDigit(sql[i]!)) i++;
      }
      while (i < n && isWordPart(sql[i]!)) i++;
      push('number', start, i);
      continue;
    }

    if (c === '@') {
      const start = i;
      i++;
      if (sql[i] === '@') i++;
      while (i < n && (isWordPart(sql[i]!) || sql[i] === '.')) i++;
      push(i - start > (sql[start + 1] === '@' ? 2 : 1) ? 'variable' : 'other', start, i);
      continue;
    }

    if (PUNCT.has(c)) {
      push('punct', i, i + 1);
      i++;
      continue;
    }

    // Whole code point, so an error message never quotes half a surrogate pair.
    const cp = sql.codePointAt(i)!;
    const len = cp > 0xffff ? 2 : 1;
    push('other', i, i + len);
    i += len;
  }

  return { ok: true, tokens };
}

function fail(offset: number, message: string, expected: string[]): LexResult {
  return { ok: false, error: { offset, message, expected, found: 'end of input' } };
}

/** 1-based line and column (in code points) of a UTF-16 offset; \r\n, \n and \r end a line. */
export function positionAt(sql: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  const stop = Math.min(offset, sql.length);
  for (let i = 0; i < stop; i++) {
    const c = sql[i];
    if (c === '\n' || (c === '\r' && sql[i + 1] !== '\n')) {
      line++;
      lineStart = i + 1;
    }
  }
  let column = 1;
  for (let i = lineStart; i < offset; i++) {
    const code = sql.charCodeAt(i);
    // Count a surrogate pair once: skip the low half.
    if (code >= 0xdc00 && code <= 0xdfff && i > lineStart) {
      const prev = sql.charCodeAt(i - 1);
      if (prev >= 0xd800 && prev <= 0xdbff) continue;
    }
    column++;
  }
  return { line, column };
}

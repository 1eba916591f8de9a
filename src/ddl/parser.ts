// Recursive-descent parser for the mvsched DDL (DESIGN.md section 3). START WITH / NEXT
// expressions and the defining SELECT are captured as source text, not parsed: the database is
// the authority on its own expression syntax, and re-parsing MySQL here would only add a second,
// disagreeing opinion. What this parser must get right is where those texts end.

import { ValidationError } from '../errors.js';
import type { CaptureMode, PurgeClause, QualifiedName, RefreshMethod, Schedule, Statement, TargetLag } from './ast.js';
import { positionAt, tokenize, type Token } from './lexer.js';

export type { Statement } from './ast.js';

export interface SourcePosition {
  line: number;
  column: number;
  offset: number;
}

export interface DdlSyntaxErrorInfo extends SourcePosition {
  /** What would have been accepted at this position; empty for validation errors. */
  expected: string[];
  /** Source text of the offending token, or "end of input". */
  found: string;
}

/**
 * A DDL statement that cannot be accepted. line/column are 1-based (column in code points),
 * offset is the 0-based UTF-16 index into the parsed text.
 */
export class DdlSyntaxError extends ValidationError {
  readonly line: number;
  readonly column: number;
  readonly offset: number;
  readonly expected: string[];
  readonly found: string;

  constructor(message: string, info: DdlSyntaxErrorInfo) {
    super(message, { ...info });
    this.line = info.line;
    this.column = info.column;
    this.offset = info.offset;
    this.expected = info.expected;
    this.found = info.found;
  }
}

/** Words of this grammar; a bare identifier spelled like one must be backquoted. */
export const RESERVED_WORDS: ReadonlySet<string> = new Set([
  'ALTER',
  'AS',
  'COMPLETE',
  'CREATE',
  'DROP',
  'FAST',
  'FORCE',
  'IMMEDIATE',
  'LOG',
  'MATERIALIZED',
  'NEXT',
  'ON',
  'PURGE',
  'REFRESH',
  'RESUME',
  'SELECT',
  'START',
  'SUSPEND',
  'VIEW',
  'WITH',
]);

const MAX_IDENTIFIER_LENGTH = 64;
/** A century, like NEXT's bound. */
const MAX_TARGET_LAG_S = 366 * 86_400 * 100;
const END = 'end of statement';
const EOF = 'end of input';

function formatExpected(items: string[]): string {
  // Keywords and descriptions read as words; punctuation needs quotes to be visible.
  const shown = items.map((s) => (/^[A-Za-z ]+$/.test(s) ? s : `"${s}"`));
  if (shown.length <= 1) return shown.join('');
  return `${shown.slice(0, -1).join(', ')} or ${shown[shown.length - 1]}`;
}

function quoteFound(text: string): string {
  const short = text.length > 40 ? `${text.slice(0, 40)}...` : text;
  return `"${short.replace(/\r\n|\r|\n/g, '\\n')}"`;
}

/** Where a piece of a larger script starts, so errors can point into the original file. */
export type SourceOrigin = SourcePosition;

function makeError(sql: string, origin: SourceOrigin | undefined, offset: number, detail: string, expected: string[], found: string): DdlSyntaxError {
  const pos = positionAt(sql, offset);
  let { line, column } = pos;
  let absOffset = offset;
  if (origin) {
    if (line === 1) column += origin.column - 1;
    line += origin.line - 1;
    absOffset += origin.offset;
  }
  return new DdlSyntaxError(`syntax error at line ${line}, column ${column}: ${detail}`, {
    line,
    column,
    offset: absOffset,
    expected,
    found,
  });
}

function lex(sql: string, origin?: SourceOrigin): Token[] {
  const result = tokenize(sql);
  if (!result.ok) {
    const e = result.error;
    throw makeError(sql, origin, e.offset, `${e.message}: expected ${formatExpected(e.expected)}, found ${e.found}`, e.expected, e.found);
  }
  return result.tokens;
}

class Parser {
  private pos = 0;
  /** Index of the terminating `;` token, or tokens.length. */
  private readonly end: number;

  constructor(
    private readonly sql: string,
    private readonly tokens: Token[],
    private readonly origin: SourceOrigin | undefined,
  ) {
    const semi = tokens.findIndex((t) => t.type === 'punct' && t.text === ';');
    this.end = semi < 0 ? tokens.length : semi;
  }

  parse(): Statement {
    const stmt = this.statement();
    this.expectEnd([]);
    const after = this.tokens[this.end + 1];
    if (after) {
      throw this.errorAt(after, `expected ${EOF}, found ${quoteFound(after.text)} (only one statement is allowed; a script must be split into statements first)`, [EOF]);
    }
    return stmt;
  }

  // ---- token helpers ----

  private peek(): Token | undefined {
    return this.pos < this.end ? this.tokens[this.pos] : undefined;
  }

  private isKeyword(tok: Token | undefined, kw: string): boolean {
    return tok !== undefined && tok.type === 'word' && tok.text.toUpperCase() === kw;
  }

  private atKeyword(kw: string): boolean {
    return this.isKeyword(this.peek(), kw);
  }

  private acceptKeyword(kw: string): boolean {
    if (!this.atKeyword(kw)) return false;
    this.pos++;
    return true;
  }

  private expectKeyword(kw: string): Token {
    const tok = this.peek();
    if (!this.isKeyword(tok, kw)) this.fail([kw]);
    this.pos++;
    return tok!;
  }

  /** Consumes whichever of `options` is next and returns it upper-cased, or fails. */
  private expectOneOf<T extends string>(options: readonly T[], alsoExpected: string[] = []): T {
    const tok = this.peek();
    const word = tok?.type === 'word' ? tok.text.toUpperCase() : undefined;
    const hit = options.find((o) => o === word);
    if (hit === undefined) this.fail([...options, ...alsoExpected]);
    this.pos++;
    return hit;
  }

  private acceptPunct(p: string): boolean {
    const tok = this.peek();
    if (tok?.type === 'punct' && tok.text === p) {
      this.pos++;
      return true;
    }
    return false;
  }

  private expectEnd(alternatives: string[]): void {
    if (this.pos < this.end) this.fail([...alternatives, END]);
  }

  // ---- errors ----

  /** Position of "end of input": just after the last token, not after trailing blank lines. */
  private endOffset(): number {
    const last = this.tokens[this.tokens.length - 1];
    return last ? last.end : 0;
  }

  private errorAt(tok: Token | undefined, detail: string, expected: string[]): DdlSyntaxError {
    const offset = tok ? tok.start : this.endOffset();
    return makeError(this.sql, this.origin, offset, detail, expected, tok ? tok.text : EOF);
  }

  private fail(expected: string[], hint?: string): never {
    // Past the statement end the next real token is the `;` (or nothing): report that.
    const tok = this.tokens[this.pos];
    const found = tok ? quoteFound(tok.text) : EOF;
    throw this.errorAt(tok, `expected ${formatExpected(expected)}, found ${found}${hint ? ` (${hint})` : ''}`, expected);
  }

  // ---- grammar ----

  private statement(): Statement {
    const verb = this.expectOneOf(['CREATE', 'ALTER', 'DROP', 'PURGE', 'REFRESH'] as const);
    this.expectKeyword('MATERIALIZED');
    this.expectKeyword('VIEW');
    switch (verb) {
      case 'CREATE':
        return this.atKeyword('LOG') ? this.createMlog() : this.createMview();
      case 'ALTER':
        return this.atKeyword('LOG') ? this.alterMlog() : this.alterMview();
      case 'DROP':
        if (this.atKeyword('LOG')) {
          const table = this.mlogTarget();
          this.expectEnd([]);
          return { kind: 'dropMlog', table, text: this.text() };
        } else {
          const name = this.qualifiedName('view name', ['LOG']);
          const cascade = this.acceptKeyword('CASCADE');
          this.expectEnd(cascade ? [] : ['CASCADE']);
          return { kind: 'dropMview', name, ...(cascade ? { cascade: true as const } : {}), text: this.text() };
        }
      case 'PURGE': {
        if (!this.atKeyword('LOG')) this.fail(['LOG']);
        const table = this.mlogTarget();
        this.expectEnd([]);
        return { kind: 'purgeMlog', table, text: this.text() };
      }
      case 'REFRESH': {
        const name = this.qualifiedName('view name');
        let method: 'COMPLETE' | 'FAST' | undefined;
        if (this.pos < this.end && !this.atKeyword('CASCADE')) method = this.expectOneOf(['COMPLETE', 'FAST'] as const, ['CASCADE', END]);
        const cascade = this.acceptKeyword('CASCADE');
        this.expectEnd(cascade ? [] : ['CASCADE']);
        return { kind: 'refreshMview', name, ...(method ? { method } : {}), ...(cascade ? { cascade: true as const } : {}), text: this.text() };
      }
    }
  }

  /** `LOG ON [s.]t` */
  private mlogTarget(): QualifiedName {
    this.expectKeyword('LOG');
    this.expectKeyword('ON');
    return this.qualifiedName('table name');
  }

  private createMlog(): Statement {
    const table = this.mlogTarget();
    const columns = this.columnList();
    let purge: PurgeClause | undefined;
    if (this.acceptKeyword('PURGE')) purge = this.purgeClause(['USING']);
    let capture: CaptureMode | undefined;
    if (this.acceptKeyword('USING')) capture = this.expectOneOf(['TRIGGERS', 'BINLOG'] as const);
    else this.expectEnd(purge ? ['USING'] : ['PURGE', 'USING']);
    this.expectEnd([]);
    return { kind: 'createMlog', table, columns, ...(purge ? { purge } : {}), ...(capture ? { capture } : {}), text: this.text() };
  }

  private alterMlog(): Statement {
    const table = this.mlogTarget();
    this.expectKeyword('PURGE');
    const purge = this.purgeClause();
    this.expectEnd([]);
    return { kind: 'alterMlogPurge', table, purge, text: this.text() };
  }

  /** After PURGE: `IMMEDIATE | [START WITH expr] NEXT expr`; `stops` are keywords that may follow it. */
  private purgeClause(stops: string[] = []): PurgeClause {
    if (this.acceptKeyword('IMMEDIATE')) return { immediate: true };
    let startWith: string | undefined;
    if (this.acceptKeyword('START')) {
      this.expectKeyword('WITH');
      startWith = this.expression(['NEXT', 'AS', ...stops]);
      this.expectKeyword('NEXT');
    } else if (!this.acceptKeyword('NEXT')) {
      this.fail(['IMMEDIATE', 'START WITH', 'NEXT']);
    }
    const next = this.expression(['AS', ...stops]);
    return startWith === undefined ? { immediate: false, next } : { immediate: false, startWith, next };
  }

  private columnList(): string[] {
    if (!this.acceptPunct('(')) this.fail(['(']);
    const columns: string[] = [];
    const seen = new Map<string, Token>();
    for (;;) {
      const tok = this.peek();
      const column = this.identifier('column name');
      const key = column.toLowerCase();
      const first = seen.get(key);
      if (first) {
        const p = positionAt(this.sql, first.start);
        throw this.errorAt(tok, `duplicate column ${quoteFound(column)} in column list (first listed at line ${p.line}, column ${p.column})`, []);
      }
      seen.set(key, tok!);
      columns.push(column);
      if (this.acceptPunct(')')) return columns;
      if (!this.acceptPunct(',')) this.fail([',', ')']);
    }
  }

  private createMview(): Statement {
    const name = this.qualifiedName('view name', ['LOG']);
    let method: RefreshMethod | undefined;
    if (this.acceptKeyword('REFRESH')) method = this.expectOneOf(['FAST', 'COMPLETE', 'FORCE'] as const);
    const { schedule, expected } = this.when(method ? [] : ['REFRESH']);
    if (!this.acceptKeyword('AS')) this.fail([...expected, 'AS']);
    const select = this.selectBody();
    return { kind: 'createMview', name, ...(method ? { method } : {}), schedule, select, text: this.text() };
  }

  private alterMview(): Statement {
    const name = this.qualifiedName('view name', ['LOG']);
    const action = this.expectOneOf(['REFRESH', 'SUSPEND', 'RESUME'] as const);
    if (action !== 'REFRESH') {
      this.expectEnd([]);
      return { kind: action === 'SUSPEND' ? 'alterMviewSuspend' : 'alterMviewResume', name, text: this.text() };
    }
    const methods = ['FAST', 'COMPLETE', 'FORCE'] as const;
    const tok = this.peek();
    const word = tok?.type === 'word' ? tok.text.toUpperCase() : '';
    let method: RefreshMethod | undefined;
    if ((methods as readonly string[]).includes(word)) {
      method = word as RefreshMethod;
      this.pos++;
    }
    const { schedule, expected } = this.when(method ? [] : [...methods]);
    // A bare `ALTER ... REFRESH` would change nothing, so it is rejected rather than ignored.
    if (!method && Object.keys(schedule).length === 0) this.fail(expected);
    this.expectEnd(expected);
    return { kind: 'alterMviewRefresh', name, ...(method ? { method } : {}), schedule, text: this.text() };
  }

  /**
   * `<when> := [START WITH expr] [NEXT expr] | TARGET LAG {n | DOWNSTREAM} | ON DEMAND`, possibly
   * empty. Returns what could still follow it (for the caller's error message), with `before`
   * first when nothing was read.
   */
  private when(before: string[]): { schedule: Schedule; expected: string[] } {
    const schedule: Schedule = {};
    if (this.acceptKeyword('TARGET')) {
      this.expectKeyword('LAG');
      schedule.targetLag = this.targetLag();
      return { schedule, expected: [] };
    }
    if (this.acceptKeyword('ON')) {
      this.expectKeyword('DEMAND');
      schedule.onDemand = true;
      return { schedule, expected: [] };
    }
    let expected = [...before, 'START WITH', 'NEXT', 'TARGET LAG', 'ON DEMAND'];
    if (this.acceptKeyword('START')) {
      this.expectKeyword('WITH');
      schedule.startWith = this.expression(['NEXT', 'AS', 'TARGET']);
      expected = ['NEXT'];
    }
    if (this.acceptKeyword('NEXT')) {
      // TARGET cannot start anything a NEXT expression may hold: a clearer error than the server's.
      schedule.next = this.expression(['AS', 'TARGET']);
      expected = [];
    }
    return { schedule, expected };
  }

  /** After TARGET LAG: whole seconds >= 1, or DOWNSTREAM. */
  private targetLag(): TargetLag {
    if (this.acceptKeyword('DOWNSTREAM')) return 'DOWNSTREAM';
    const tok = this.peek();
    if (!tok || tok.type !== 'number') this.fail(['a number of seconds', 'DOWNSTREAM']);
    if (!/^\d+$/.test(tok.text) || Number(tok.text) < 1 || Number(tok.text) > MAX_TARGET_LAG_S) {
      throw this.errorAt(tok, `TARGET LAG must be a whole number of seconds from 1 to ${MAX_TARGET_LAG_S}, or DOWNSTREAM; found ${quoteFound(tok.text)}`, []);
    }
    this.pos++;
    return Number(tok.text);
  }

  /**
   * Everything after AS to the end of the statement. Only the opening is checked, to catch a
   * misplaced AS early; the database validates the rest when the view is built.
   */
  private selectBody(): string {
    const first = this.peek();
    const ok = first !== undefined && (this.isKeyword(first, 'SELECT') || this.isKeyword(first, 'WITH') || (first.type === 'punct' && first.text === '('));
    if (!ok) {
      const tok = this.tokens[this.pos];
      const found = tok ? quoteFound(tok.text) : EOF;
      throw this.errorAt(tok, `expected SELECT after AS (a query starting with SELECT, WITH or "("), found ${found}`, ['SELECT', 'WITH', '(']);
    }
    const last = this.tokens[this.end - 1]!;
    this.pos = this.end;
    return this.sql.slice(first.start, last.end);
  }

  /**
   * Raw expression text up to the first of `stops` at parenthesis depth 0, or the statement
   * end. Strings, quoted identifiers and comments are already single tokens (or gone), so a
   * keyword inside them can never stop the scan.
   */
  private expression(stops: string[]): string {
    const startPos = this.pos;
    const opens: Token[] = [];
    while (this.pos < this.end) {
      const tok = this.tokens[this.pos]!;
      if (tok.type === 'punct' && tok.text === '(') {
        opens.push(tok);
      } else if (tok.type === 'punct' && tok.text === ')') {
        if (opens.length === 0) throw this.errorAt(tok, `unmatched ")" in expression`, []);
        opens.pop();
      } else if (opens.length === 0 && tok.type === 'word' && stops.includes(tok.text.toUpperCase()) && !this.isQualifierPart(this.pos)) {
        break;
      }
      this.pos++;
    }
    const unclosed = opens[opens.length - 1];
    if (unclosed) {
      // Reported at the "(" itself: the end of the statement says nothing about where it was.
      const found = this.tokens[this.end] ? quoteFound(';') : EOF;
      throw makeError(this.sql, this.origin, unclosed.start, `unclosed "(" starting here: expected ")", found ${found}`, [')'], this.tokens[this.end] ? ';' : EOF);
    }
    if (this.pos === startPos) this.fail(['expression']);
    return this.sql.slice(this.tokens[startPos]!.start, this.tokens[this.pos - 1]!.end);
  }

  /** `t.next` names a column, not the keyword. */
  private isQualifierPart(index: number): boolean {
    const prev = this.tokens[index - 1];
    return prev !== undefined && prev.type === 'punct' && prev.text === '.';
  }

  // ---- names ----

  /**
   * `[schema.]name`. `keywordAlternatives` are keywords that could also appear here; they go into
   * the expected-list when neither matches.
   */
  private qualifiedName(what: string, keywordAlternatives: string[] = []): QualifiedName {
    const first = this.identifier(what, keywordAlternatives);
    if (!this.acceptPunct('.')) return { name: first };
    const second = this.identifier(what);
    return { schema: first, name: second };
  }

  private identifier(what: string, keywordAlternatives: string[] = []): string {
    const tok = this.peek();
    const expected = [...keywordAlternatives, what];
    if (!tok || (tok.type !== 'word' && tok.type !== 'quoted')) this.fail(expected);
    if (tok.type === 'word') {
      const upper = tok.text.toUpperCase();
      if (RESERVED_WORDS.has(upper)) {
        this.fail(expected, `${upper} is a reserved word; write \`${tok.text}\` to use it as a name`);
      }
    }
    const value = tok.value;
    if (value.length === 0) {
      throw this.errorAt(tok, `invalid ${what}: an identifier must not be empty`, []);
    }
    const length = [...value].length;
    if (length > MAX_IDENTIFIER_LENGTH) {
      throw this.errorAt(tok, `invalid ${what}: identifier is ${length} characters long, at most ${MAX_IDENTIFIER_LENGTH} are allowed`, []);
    }
    if (value.endsWith(' ')) {
      throw this.errorAt(tok, `invalid ${what} ${quoteFound(tok.text)}: an identifier must not end with a space`, []);
    }
    if (value.includes('\0')) {
      throw this.errorAt(tok, `invalid ${what}: an identifier must not contain a NUL character`, []);
    }
    this.pos++;
    return value;
  }

  /** Source of the statement proper: first token to the last one before `;`. */
  private text(): string {
    const first = this.tokens[0];
    const last = this.tokens[this.end - 1];
    return first && last ? this.sql.slice(first.start, last.end) : '';
  }
}

/**
 * Parses exactly one DDL statement (a trailing `;` and comments are fine). `origin` shifts the
 * reported positions when `sql` is a piece of a larger script (see splitStatementsWithLocation).
 */
export function parseStatement(sql: string, origin?: SourceOrigin): Statement {
  return new Parser(sql, lex(sql, origin), origin).parse();
}

export interface LocatedStatement extends SourcePosition {
  text: string;
}

/**
 * Splits a script on `;` outside strings, quoted identifiers and comments. Like the mysql client,
 * a `;` inside parentheses still ends a statement: none of these statements can contain one, and
 * an unbalanced "(" would otherwise swallow the rest of the file into one confusing error.
 * Empty statements (only whitespace/comments) are dropped; each text is trimmed of surrounding
 * whitespace and comments.
 */
export function splitStatementsWithLocation(sql: string): LocatedStatement[] {
  const tokens = lex(sql);
  const out: LocatedStatement[] = [];
  let first: Token | undefined;
  let last: Token | undefined;
  const flush = (): void => {
    if (first && last) {
      out.push({ text: sql.slice(first.start, last.end), offset: first.start, ...positionAt(sql, first.start) });
    }
    first = last = undefined;
  };
  for (const tok of tokens) {
    if (tok.type === 'punct' && tok.text === ';') {
      flush();
    } else {
      first ??= tok;
      last = tok;
    }
  }
  flush();
  return out;
}

export function splitStatements(sql: string): string[] {
  return splitStatementsWithLocation(sql).map((s) => s.text);
}

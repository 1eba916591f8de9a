// What a DDL statement seen in the binary log does to the tables it names, as far as an MV log
// cares (DESIGN.md §2 "Change capture from the binary log"): a table dropped, renamed or
// truncated, a column dropped or renamed, a whole database dropped. Adding columns, indexes or changing a column's type
// are none of these. This reads the statement text the server logged; it does not need to
// understand the whole of MySQL's DDL, only to find these clauses.

export type DdlEffect =
  | { kind: 'dropTable'; schema: string; table: string }
  | { kind: 'renameTable'; schema: string; table: string; to: string }
  | { kind: 'truncate'; schema: string; table: string }
  | { kind: 'dropColumn'; schema: string; table: string; column: string }
  | { kind: 'renameColumn'; schema: string; table: string; column: string; to: string }
  | { kind: 'dropSchema'; schema: string };

interface Tok {
  /** 'w' word, 'q' quoted identifier, 's' string literal, 'p' punctuation */
  t: 'w' | 'q' | 's' | 'p';
  v: string;
}

function tokenize(sql: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < sql.length) {
    const c = sql[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === '/' && sql[i + 1] === '*') {
      const end = sql.indexOf('*/', i + 2);
      i = end < 0 ? sql.length : end + 2;
    } else if ((c === '-' && sql[i + 1] === '-' && /\s/.test(sql[i + 2] ?? ' ')) || c === '#') {
      const end = sql.indexOf('\n', i);
      i = end < 0 ? sql.length : end + 1;
    } else if (c === '`' || c === '"' || c === "'") {
      let v = '';
      let j = i + 1;
      for (; j < sql.length; j++) {
        if (sql[j] === c) {
          if (sql[j + 1] === c) {
            v += c;
            j++;
            continue;
          }
          break;
        }
        if (sql[j] === '\\' && c !== '`') {
          v += sql[j + 1] ?? '';
          j++;
          continue;
        }
        v += sql[j];
      }
      out.push({ t: c === '`' ? 'q' : 's', v });
      i = j + 1;
    } else if (/[A-Za-z0-9_$\u0080-\uffff]/.test(c)) {
      let j = i;
      while (j < sql.length && /[A-Za-z0-9_$\u0080-\uffff]/.test(sql[j]!)) j++;
      out.push({ t: 'w', v: sql.slice(i, j) });
      i = j;
    } else {
      out.push({ t: 'p', v: c });
      i++;
    }
  }
  return out;
}

class Cursor {
  i = 0;
  constructor(readonly toks: Tok[]) {}
  peek(k = 0): Tok | undefined {
    return this.toks[this.i + k];
  }
  isWord(w: string, k = 0): boolean {
    const t = this.peek(k);
    return t?.t === 'w' && t.v.toUpperCase() === w;
  }
  accept(...words: string[]): boolean {
    if (!words.every((w, k) => this.isWord(w, k))) return false;
    this.i += words.length;
    return true;
  }
  acceptPunct(p: string): boolean {
    const t = this.peek();
    if (t?.t === 'p' && t.v === p) {
      this.i++;
      return true;
    }
    return false;
  }
  /** An identifier (bare or backquoted), or undefined. */
  ident(): string | undefined {
    const t = this.peek();
    if (t && (t.t === 'w' || t.t === 'q')) {
      this.i++;
      return t.v;
    }
    return undefined;
  }
  /** `[schema.]table` */
  tableName(defaultSchema: string): { schema: string; table: string } | undefined {
    const first = this.ident();
    if (first === undefined) return undefined;
    if (this.acceptPunct('.')) {
      const second = this.ident();
      return second === undefined ? undefined : { schema: first, table: second };
    }
    return { schema: defaultSchema, table: first };
  }
  done(): boolean {
    return this.i >= this.toks.length;
  }
}

/** Keywords after DROP that name something other than a column. */
const DROP_NOT_COLUMN = new Set(['INDEX', 'KEY', 'PRIMARY', 'FOREIGN', 'CONSTRAINT', 'CHECK', 'PARTITION', 'SYSTEM', 'PERIOD', 'UNIQUE', 'FULLTEXT', 'SPATIAL', 'DEFAULT']);

/** Split the tokens after `ALTER TABLE name` into its comma-separated clauses (outside parentheses). */
function clauses(toks: Tok[]): Tok[][] {
  const out: Tok[][] = [[]];
  let depth = 0;
  for (const t of toks) {
    if (t.t === 'p' && t.v === '(') depth++;
    if (t.t === 'p' && t.v === ')') depth--;
    if (depth === 0 && t.t === 'p' && t.v === ',') out.push([]);
    else out[out.length - 1]!.push(t);
  }
  return out.filter((c) => c.length > 0);
}

function alterClause(toks: Tok[], target: { schema: string; table: string }): DdlEffect | undefined {
  const c = new Cursor(toks);
  if (c.accept('DROP')) {
    const explicit = c.accept('COLUMN');
    c.accept('IF', 'EXISTS');
    const next = c.peek();
    if (!explicit && next?.t === 'w' && DROP_NOT_COLUMN.has(next.v.toUpperCase())) return undefined;
    const column = c.ident();
    return column === undefined ? undefined : { kind: 'dropColumn', ...target, column };
  }
  if (c.accept('CHANGE')) {
    c.accept('COLUMN');
    c.accept('IF', 'EXISTS');
    const from = c.ident();
    const to = c.ident();
    if (from === undefined || to === undefined || from.toLowerCase() === to.toLowerCase()) return undefined;
    return { kind: 'renameColumn', ...target, column: from, to };
  }
  if (c.accept('RENAME')) {
    if (c.accept('COLUMN')) {
      c.accept('IF', 'EXISTS');
      const from = c.ident();
      c.accept('TO');
      const to = c.ident();
      return from === undefined || to === undefined ? undefined : { kind: 'renameColumn', ...target, column: from, to };
    }
    if (c.isWord('INDEX') || c.isWord('KEY')) return undefined;
    if (!c.accept('TO')) c.accept('AS');
    const to = c.tableName(target.schema);
    return to === undefined ? undefined : { kind: 'renameTable', ...target, to: `${to.schema}.${to.table}` };
  }
  return undefined;
}

/** Effects of one DDL statement; `defaultSchema` is the schema the statement ran in. */
export function scanDdl(sql: string, defaultSchema: string): DdlEffect[] {
  const c = new Cursor(tokenize(sql));
  const out: DdlEffect[] = [];
  if (c.accept('ALTER')) {
    c.accept('ONLINE');
    c.accept('IGNORE');
    if (!c.accept('TABLE')) return out;
    c.accept('IF', 'EXISTS');
    const target = c.tableName(defaultSchema);
    if (!target) return out;
    for (const clause of clauses(c.toks.slice(c.i))) {
      const e = alterClause(clause, target);
      if (e) out.push(e);
    }
  } else if (c.accept('RENAME')) {
    if (!c.accept('TABLE') && !c.accept('TABLES')) return out;
    do {
      const from = c.tableName(defaultSchema);
      c.accept('WAIT');
      if (!from || !c.accept('TO')) return out;
      const to = c.tableName(defaultSchema);
      if (!to) return out;
      out.push({ kind: 'renameTable', ...from, to: `${to.schema}.${to.table}` });
    } while (c.acceptPunct(','));
  } else if (c.accept('DROP')) {
    if (c.accept('DATABASE') || c.accept('SCHEMA')) {
      c.accept('IF', 'EXISTS');
      const schema = c.ident();
      if (schema !== undefined) out.push({ kind: 'dropSchema', schema });
      return out;
    }
    c.accept('TEMPORARY');
    if (!c.accept('TABLE') && !c.accept('TABLES')) return out;
    c.accept('IF', 'EXISTS');
    do {
      const t = c.tableName(defaultSchema);
      if (!t) return out;
      out.push({ kind: 'dropTable', ...t });
    } while (c.acceptPunct(','));
  } else if (c.accept('CREATE', 'OR', 'REPLACE')) {
    // Replaces the table of that name: the old one is dropped.
    c.accept('TEMPORARY');
    if (!c.accept('TABLE')) return out;
    const t = c.tableName(defaultSchema);
    if (t) out.push({ kind: 'dropTable', ...t });
  } else if (c.accept('TRUNCATE')) {
    c.accept('TABLE');
    const t = c.tableName(defaultSchema);
    if (t) out.push({ kind: 'truncate', ...t });
  }
  return out;
}

import { ValidationError } from '../errors.js';
import type { QualifiedName } from '../ddl/ast.js';

export interface ResolvedName {
  schema: string;
  name: string;
}

/** Identifier rules MySQL enforces, checked before any SQL is built. */
export function validateIdentifier(value: string, what: string): string {
  if (value.length < 1 || value.length > 64) {
    throw new ValidationError(`${what} name must be 1-64 characters, got ${value.length}: ${JSON.stringify(value)}`);
  }
  if (/[\u0000]/.test(value) || / $/.test(value)) {
    throw new ValidationError(`${what} name ${JSON.stringify(value)} may not contain NUL or end with a space`);
  }
  if (/[\u{10000}-\u{10FFFF}]/u.test(value)) {
    throw new ValidationError(
      `${what} name ${JSON.stringify(value)} has a character outside Unicode's Basic Multilingual Plane (an emoji, say), which MySQL does not allow in names`,
    );
  }
  return value;
}

/**
 * MV names that would collide with mvsched's own tables: the shadow tables of COMPLETE refreshes
 * (`__mvs_<id>_new`) and MV logs (`mlog$<table>`).
 */
export function assertMviewNameAllowed(name: string): void {
  const n = name.toLowerCase();
  if (n.startsWith('__mvs_') || n.startsWith('mlog$')) {
    throw new ValidationError(
      `materialized view name ${JSON.stringify(name)} is reserved: names starting with __mvs_ or mlog$ belong to mvsched's own tables`,
    );
  }
}

/** Backquote an identifier (validated). */
export function quoteIdent(value: string): string {
  return `\`${value.replace(/`/g, '``')}\``;
}

export function quoteQualified(n: ResolvedName): string {
  return `${quoteIdent(n.schema)}.${quoteIdent(n.name)}`;
}

export function resolveName(q: QualifiedName, defaultSchema: string, what: string): ResolvedName {
  return {
    schema: validateIdentifier(q.schema ?? defaultSchema, `${what} schema`),
    name: validateIdentifier(q.name, what),
  };
}

/** Parse "s.mv" / "mv" / "`s`.`m.v`" as used in job payloads and CLI arguments. */
export function parseDottedName(text: string, defaultSchema: string, what: string): ResolvedName {
  const parts: string[] = [];
  let i = 0;
  const s = text.trim();
  while (i < s.length) {
    if (s[i] === '`') {
      let j = i + 1;
      let out = '';
      for (;;) {
        if (j >= s.length) throw new ValidationError(`${what}: unterminated backquote in ${JSON.stringify(text)}`);
        if (s[j] === '`') {
          if (s[j + 1] === '`') {
            out += '`';
            j += 2;
            continue;
          }
          break;
        }
        out += s[j];
        j++;
      }
      parts.push(out);
      i = j + 1;
    } else {
      const dot = s.indexOf('.', i);
      const end = dot === -1 ? s.length : dot;
      parts.push(s.slice(i, end));
      i = end;
    }
    if (i < s.length) {
      if (s[i] !== '.') throw new ValidationError(`${what}: expected "." in ${JSON.stringify(text)}`);
      i++;
      if (i === s.length) throw new ValidationError(`${what}: name missing after "." in ${JSON.stringify(text)}`);
    }
  }
  if (parts.length === 1) return resolveName({ name: parts[0]! }, defaultSchema, what);
  if (parts.length === 2) return resolveName({ schema: parts[0]!, name: parts[1]! }, defaultSchema, what);
  throw new ValidationError(`${what}: expected [schema.]name, got ${JSON.stringify(text)}`);
}

export function displayName(n: ResolvedName): string {
  return `${n.schema}.${n.name}`;
}

/**
 * The name as mvsched takes it back (CLI arguments, job payloads): `schema.name`, with a part in
 * backquotes where it needs them (a dot, a space, a backquote, ...): app.`a.b`.
 */
export function qualifiedText(n: ResolvedName): string {
  const part = (s: string) => (/^[A-Za-z0-9_$]+$/.test(s) ? s : quoteIdent(s));
  return `${part(n.schema)}.${part(n.name)}`;
}

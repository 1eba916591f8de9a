import { tokenize } from '../ddl/lexer.js';

// node-sql-parser's grammar takes some words MySQL allows as bare column names (`status`,
// `type`, `value`, `key`, ...) for keywords and then fails on a definition MySQL runs fine. When
// a definition does not parse, it is parsed again with every bare word that names a column or
// table in backquotes: words of the SELECT grammar and function names (a word before `(`) stay
// as they are.

const GRAMMAR = new Set(
  (
    'SELECT DISTINCT DISTINCTROW ALL FROM WHERE GROUP BY HAVING ORDER ASC DESC LIMIT OFFSET AS ON JOIN INNER LEFT RIGHT ' +
    'OUTER CROSS NATURAL STRAIGHT_JOIN USING AND OR XOR NOT NULL IS IN BETWEEN LIKE REGEXP RLIKE ESCAPE CASE WHEN THEN ' +
    'ELSE END TRUE FALSE UNKNOWN DIV MOD EXISTS UNION INTERSECT EXCEPT WITH RECURSIVE INTERVAL BINARY COLLATE SEPARATOR ' +
    'OVER PARTITION WINDOW ROWS RANGE PRECEDING FOLLOWING CURRENT ROW UNBOUNDED FOR UPDATE SHARE LOCK MODE SOUNDS DUAL ' +
    'LATERAL CHARACTER SET CHARSET SIGNED UNSIGNED INTEGER INT CHAR DATE DATETIME TIME DECIMAL DOUBLE FLOAT JSON ' +
    'MICROSECOND SECOND MINUTE HOUR DAY WEEK MONTH QUARTER YEAR SECOND_MICROSECOND MINUTE_MICROSECOND MINUTE_SECOND ' +
    'HOUR_MICROSECOND HOUR_SECOND HOUR_MINUTE DAY_MICROSECOND DAY_SECOND DAY_MINUTE DAY_HOUR YEAR_MONTH ANY SOME ' +
    'HIGH_PRIORITY SQL_SMALL_RESULT SQL_BIG_RESULT SQL_BUFFER_RESULT SQL_NO_CACHE SQL_CALC_FOUND_ROWS'
  ).split(' '),
);

/** The definition with bare column and table names backquoted, or undefined when it cannot be lexed. */
export function quoteBareNames(select: string): string | undefined {
  const lexed = tokenize(select);
  if (!lexed.ok) return undefined;
  const t = lexed.tokens;
  let out = '';
  let at = 0;
  t.forEach((tok, i) => {
    if (tok.type !== 'word') return;
    const next = t[i + 1];
    const isFunction = next?.type === 'punct' && next.text === '(' && next.start === tok.end;
    if (GRAMMAR.has(tok.text.toUpperCase()) || isFunction) return;
    out += `${select.slice(at, tok.start)}\`${tok.text}\``;
    at = tok.end;
  });
  return out + select.slice(at);
}

// The DDL AST. Expressions (START WITH / NEXT) and the defining SELECT are kept as raw SQL text:
// the database evaluates and validates them, so the parser never second-guesses its dialect.

/** Identifier text with backquotes removed and doubled backquotes unescaped. */
export interface QualifiedName {
  schema?: string;
  name: string;
}

export type RefreshMethod = 'FAST' | 'COMPLETE' | 'FORCE';

/** TARGET LAG n (seconds >= 1) or TARGET LAG DOWNSTREAM. */
export type TargetLag = number | 'DOWNSTREAM';

/**
 * `<when>`: START WITH / NEXT as raw SQL text (trimmed of surrounding whitespace and comments),
 * or a target lag, or ON DEMAND; at most one kind is set.
 */
export interface Schedule {
  startWith?: string;
  next?: string;
  targetLag?: TargetLag;
  onDemand?: true;
}

export type PurgeClause = { immediate: true } | { immediate: false; startWith?: string; next: string };

export interface CreateMviewStatement {
  kind: 'createMview';
  name: QualifiedName;
  method?: RefreshMethod;
  schedule: Schedule;
  select: string;
  text: string;
}

export interface AlterMviewRefreshStatement {
  kind: 'alterMviewRefresh';
  name: QualifiedName;
  method?: RefreshMethod;
  schedule: Schedule;
  text: string;
}

export interface SimpleMviewStatement {
  kind: 'alterMviewSuspend' | 'alterMviewResume';
  name: QualifiedName;
  text: string;
}

export interface DropMviewStatement {
  kind: 'dropMview';
  name: QualifiedName;
  /** Also drop every MV that reads it, downstream first. */
  cascade?: true;
  text: string;
}

export interface RefreshMviewStatement {
  kind: 'refreshMview';
  name: QualifiedName;
  method?: 'COMPLETE' | 'FAST';
  /** Refresh the MVs it reads first, upstream first. */
  cascade?: true;
  text: string;
}

/** How an MV log is filled: by triggers in the writers' transactions, or from the binary log. */
export type CaptureMode = 'TRIGGERS' | 'BINLOG';

export interface CreateMlogStatement {
  kind: 'createMlog';
  table: QualifiedName;
  columns: string[];
  purge?: PurgeClause;
  /** `USING ...`; absent means TRIGGERS. */
  capture?: CaptureMode;
  text: string;
}

export interface AlterMlogPurgeStatement {
  kind: 'alterMlogPurge';
  table: QualifiedName;
  purge: PurgeClause;
  text: string;
}

export interface SimpleMlogStatement {
  kind: 'dropMlog' | 'purgeMlog';
  table: QualifiedName;
  text: string;
}

/** `text` is the statement's source, trimmed, without the trailing `;`. */
export type Statement =
  | CreateMviewStatement
  | AlterMviewRefreshStatement
  | SimpleMviewStatement
  | DropMviewStatement
  | RefreshMviewStatement
  | CreateMlogStatement
  | AlterMlogPurgeStatement
  | SimpleMlogStatement;

export type StatementKind = Statement['kind'];

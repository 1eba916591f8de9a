// Error classes carry the control flow: the API maps the first three to 4xx, workers map
// PermanentError to BullMQ's UnrecoverableError and RetryableError to a backoff.

export class MvsError extends Error {
  readonly details: Record<string, unknown> | undefined;
  constructor(message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = new.target.name;
    this.details = details;
  }
}

/** Bad input from a user or another service: nothing was written. */
export class ValidationError extends MvsError {}

/** The named MV, MV log or table does not exist. */
export class NotFoundError extends MvsError {}

/** The request contradicts current state (duplicate name, dependent MVs, lock held). */
export class ConflictError extends MvsError {}

/** A transient failure: try again later. */
export class RetryableError extends MvsError {}

/** A failure that will not go away by retrying. */
export class PermanentError extends MvsError {}

/** The environment does not describe a usable configuration. */
export class ConfigError extends MvsError {}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

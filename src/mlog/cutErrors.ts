import { RetryableError } from '../errors.js';

/** The cut gave up waiting for writer transactions in flight (MVS_CUT_WAIT_MS). */
export class CutTimeoutError extends RetryableError {}

/**
 * The cut of a BINLOG log gave up waiting for `mvsched capture` to pass its binlog position:
 * capture is down, stuck, or too far behind. A cut that gave up like any other (a REFRESH FORCE
 * MV falls back to COMPLETE after repeated ones).
 */
export class CaptureLagError extends CutTimeoutError {}
